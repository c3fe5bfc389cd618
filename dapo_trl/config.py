"""`DAPOConfig`: TRL's `GRPOConfig` with DAPO's defaults and knobs, validated at construction."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import GRPOConfig

from .core import LOSS_AGG_MODES
from .quiet import known_warnings_quiet


logger = logging.getLogger(__name__)


DYNAMIC_SAMPLING_SOURCES = ("new_prompts", "same_prompts")
DYNAMIC_SAMPLING_ROUND_SIZES = ("adaptive", "fixed")
CAP_BEHAVIORS = ("fill", "raise")


@dataclass
class DAPOConfig(GRPOConfig):
    r"""
    Configuration class for [`DAPOTrainer`]: every [`~trl.GRPOConfig`] argument, with DAPO's defaults, plus the
    knobs of the DAPO recipe (Yu et al. 2025, [arXiv 2503.14476](https://huggingface.co/papers/2503.14476)).

    Changed defaults (DAPO's): `epsilon=0.2`, `epsilon_high=0.28` (clip-higher), `beta=0.0` (no KL term, no reference
    model), `mask_truncated_completions=True` (overlong filtering), `loss_type="dapo"`. Device: with `bf16` unset,
    bf16 when a bf16-capable accelerator is present (TRL's default), else fp32, with one log line saying so (TRL
    would stop with transformers' "Your setup doesn't support bf16/gpu" error); `bf16=True` insists on bf16.

    Parameters:
        > Loss

        loss_agg_mode (`str`, *optional*, defaults to `"token-mean"`):
            How per-token losses become one scalar, over the whole optimizer step (all gradient-accumulation
            micro-batches and all processes): `"token-mean"` (DAPO), `"seq-mean-token-mean"` (GRPO),
            `"seq-mean-token-sum"`, `"seq-mean-token-sum-norm"` (sum divided by `max_completion_length`).
        clip_ratio_c (`float` or `None`, *optional*, defaults to `None`):
            Dual-clip bound for tokens with negative advantage: their loss is capped at `-A * clip_ratio_c`. Must be
            `> 1`; verl uses `3.0`. `None` disables it.

        > Dynamic sampling

        dynamic_sampling (`bool`, *optional*, defaults to `True`):
            Drop groups whose filter values are all equal (all right or all wrong: zero advantage, no gradient) and
            generate more until the generation batch is full of groups that carry signal.
        dynamic_sampling_source (`str`, *optional*, defaults to `"new_prompts"`):
            Where replacement groups come from: `"new_prompts"` (the paper's and verl's: fresh prompts from a prompt
            stream the trainer owns) or `"same_prompts"` (the dropped prompts are sampled again, up to the round cap).
        dynamic_sampling_metric (`str` or `None`, *optional*, defaults to `None`):
            Name of the reward function whose values decide whether a group carries signal. `None` uses the
            weighted sum of the task rewards, leaving out `overlong_penalty` (filter on correctness, not length).
        dynamic_sampling_round_size (`str`, *optional*, defaults to `"adaptive"`):
            `"adaptive"` sizes each round from the observed keep rate (and oversamples the first round of a
            generation batch), so most steps need one round; `"fixed"` generates whole generation batches of new
            prompts per round and drops the surplus, as verl does.
        dynamic_sampling_max_oversample (`float`, *optional*, defaults to `2.0`):
            Largest adaptive round, in prompts, as a multiple of the prompts of one generation batch. Bounds the
            memory of one generation call.
        dynamic_sampling_skip_zero_variance (`bool`, *optional*, defaults to `False`):
            GRESO-style pre-rollout skipping (arXiv 2506.02177): a prompt whose last group was zero-variance (all
            equal filter values) is skipped, before generation, with probability
            `1 - dynamic_sampling_skip_explore`, and replaced by another prompt. Needs `"new_prompts"`.
        dynamic_sampling_skip_explore (`float`, *optional*, defaults to `0.25`):
            Probability of generating for a prompt the history says is zero-variance anyway (in case the policy
            changed). Fixed, unlike GRESO's adaptive controller.
        max_num_gen_batches (`int`, *optional*, defaults to `10`):
            Cap on generation rounds per generation batch (`<= 0`: no cap).
        dynamic_sampling_at_cap (`str`, *optional*, defaults to `"fill"`):
            What happens when the cap is hit before the batch is full: `"fill"` trains on the kept groups and fills
            the remaining rows with dropped groups whose tokens are masked out of the loss (and its denominator),
            with a warning and the `dynamic_sampling/cap_hit` metric; `"raise"` stops with an error (verl's).

        > Overlong shaping

        overlong_buffer_length (`int` or `None`, *optional*, defaults to `None`):
            Soft overlong punishment (DAPO): completions longer than `max_completion_length - overlong_buffer_length`
            get a penalty growing linearly to `-overlong_penalty_factor` at `max_completion_length`. Added as a
            reward function named `overlong_penalty`. `None` disables it.
        overlong_penalty_factor (`float`, *optional*, defaults to `1.0`):
            Size of the soft overlong punishment at `max_completion_length`.

    Example:
    ```python
    >>> from dapo_trl import DAPOConfig
    >>> args = DAPOConfig(output_dir="out", clip_ratio_c=3.0, overlong_buffer_length=64, max_completion_length=256, use_cpu=True)
    >>> args.epsilon_high, args.loss_agg_mode
    (0.28, 'token-mean')

    ```
    """

    # GRPOConfig fields whose default DAPO changes
    epsilon: float = field(
        default=0.2,
        metadata={"help": "Lower clip bound: the probability ratio is clipped below at `1 - epsilon` (DAPO: 0.2)."},
    )
    epsilon_high: float | None = field(
        default=0.28,
        metadata={
            "help": "Upper clip bound (clip-higher): the ratio is clipped above at `1 + epsilon_high` (DAPO: 0.28). "
            "`None` means the same as `epsilon`."
        },
    )
    beta: float = field(
        default=0.0,
        metadata={"help": "KL coefficient. DAPO uses 0.0: no KL term and no reference model."},
    )
    mask_truncated_completions: bool = field(
        default=True,
        metadata={"help": "Overlong filtering: mask truncated completions out of the loss (DAPO: True)."},
    )

    # Loss
    loss_agg_mode: str = field(
        default="token-mean",
        metadata={
            "help": "Loss aggregation over the whole optimizer step.",
            "choices": list(LOSS_AGG_MODES),
        },
    )
    clip_ratio_c: float | None = field(
        default=None,
        metadata={"help": "Dual-clip bound (> 1) for negative-advantage tokens; `None` disables it (verl: 3.0)."},
    )

    # Dynamic sampling
    dynamic_sampling: bool = field(
        default=True,
        metadata={"help": "Drop groups whose filter values are all equal and refill the batch with more groups."},
    )
    dynamic_sampling_source: str = field(
        default="new_prompts",
        metadata={
            "help": "Where replacement groups come from: fresh prompts or the dropped prompts again.",
            "choices": list(DYNAMIC_SAMPLING_SOURCES),
        },
    )
    dynamic_sampling_metric: str | None = field(
        default=None,
        metadata={
            "help": "Reward function whose values decide which groups carry signal; `None` = weighted sum of the "
            "task rewards without `overlong_penalty`."
        },
    )
    dynamic_sampling_round_size: str = field(
        default="adaptive",
        metadata={
            "help": "`adaptive`: size rounds from the observed keep rate; `fixed`: whole generation batches (verl).",
            "choices": list(DYNAMIC_SAMPLING_ROUND_SIZES),
        },
    )
    dynamic_sampling_max_oversample: float = field(
        default=2.0,
        metadata={"help": "Largest adaptive round, as a multiple of the prompts of one generation batch."},
    )
    dynamic_sampling_skip_zero_variance: bool = field(
        default=False,
        metadata={"help": "Skip prompts whose last group was zero-variance (GRESO), with exploration."},
    )
    dynamic_sampling_skip_explore: float = field(
        default=0.25,
        metadata={"help": "Probability of keeping a prompt the history says is zero-variance."},
    )
    max_num_gen_batches: int = field(
        default=10,
        metadata={"help": "Cap on generation rounds per generation batch (<= 0: no cap)."},
    )
    dynamic_sampling_at_cap: str = field(
        default="fill",
        metadata={
            "help": "At the round cap: `fill` (train on what was kept, filler rows masked out) or `raise`.",
            "choices": list(CAP_BEHAVIORS),
        },
    )

    # Overlong shaping
    overlong_buffer_length: int | None = field(
        default=None,
        metadata={"help": "Soft overlong punishment buffer (tokens before max_completion_length); `None` = off."},
    )
    overlong_penalty_factor: float = field(
        default=1.0,
        metadata={"help": "Soft overlong punishment at max_completion_length is `-overlong_penalty_factor`."},
    )

    def __post_init__(self):
        # Checked before GRPOConfig's own checks so the error names the field.
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (got {self.num_generations}): group advantages and dynamic sampling "
                "compare completions of the same prompt."
            )
        self._resolve_device()
        with known_warnings_quiet():  # TRL's `gradient_checkpointing` default trips a transformers FutureWarning
            super().__post_init__()
        _check(self.epsilon >= 0 and self.epsilon < 1, "epsilon", self.epsilon, "must be in [0, 1)")
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        _check(self.epsilon_high >= 0, "epsilon_high", self.epsilon_high, "must be >= 0")
        _check(self.beta >= 0, "beta", self.beta, "must be >= 0")
        _check(
            self.loss_agg_mode in LOSS_AGG_MODES,
            "loss_agg_mode",
            self.loss_agg_mode,
            f"must be one of {LOSS_AGG_MODES}",
        )
        _check(
            self.clip_ratio_c is None or self.clip_ratio_c > 1,
            "clip_ratio_c",
            self.clip_ratio_c,
            "must be > 1 or None",
        )
        _check(
            self.dynamic_sampling_source in DYNAMIC_SAMPLING_SOURCES,
            "dynamic_sampling_source",
            self.dynamic_sampling_source,
            f"must be one of {DYNAMIC_SAMPLING_SOURCES}",
        )
        _check(
            self.dynamic_sampling_round_size in DYNAMIC_SAMPLING_ROUND_SIZES,
            "dynamic_sampling_round_size",
            self.dynamic_sampling_round_size,
            f"must be one of {DYNAMIC_SAMPLING_ROUND_SIZES}",
        )
        _check(
            math.isfinite(self.dynamic_sampling_max_oversample) and self.dynamic_sampling_max_oversample >= 1,
            "dynamic_sampling_max_oversample",
            self.dynamic_sampling_max_oversample,
            "must be a finite number >= 1",
        )
        _check(
            0.0 <= self.dynamic_sampling_skip_explore <= 1.0,
            "dynamic_sampling_skip_explore",
            self.dynamic_sampling_skip_explore,
            "must be in [0, 1]",
        )
        _check(
            not self.dynamic_sampling_skip_zero_variance or self.dynamic_sampling,
            "dynamic_sampling_skip_zero_variance",
            self.dynamic_sampling_skip_zero_variance,
            "needs dynamic_sampling=True",
        )
        # Kept groups come from several rounds and keep the advantages computed in their round: right for per-group
        # normalization, wrong for batch-wide statistics that included the dropped groups.
        if self.dynamic_sampling:
            _check(
                self.scale_rewards != "batch",
                "scale_rewards",
                self.scale_rewards,
                "= 'batch' is not supported with dynamic_sampling (use 'group' or 'none')",
            )
            _check(
                self.multi_objective_aggregation != "normalize_then_sum",
                "multi_objective_aggregation",
                self.multi_objective_aggregation,
                "= 'normalize_then_sum' is not supported with dynamic_sampling (use 'sum_then_normalize')",
            )
        _check(
            not self.dynamic_sampling_skip_zero_variance or self.dynamic_sampling_source == "new_prompts",
            "dynamic_sampling_skip_zero_variance",
            self.dynamic_sampling_skip_zero_variance,
            "needs dynamic_sampling_source='new_prompts' (skipped prompts are replaced by new ones)",
        )
        _check(
            isinstance(self.max_num_gen_batches, int) and not isinstance(self.max_num_gen_batches, bool),
            "max_num_gen_batches",
            self.max_num_gen_batches,
            "must be an int (<= 0: no cap)",
        )
        _check(
            self.dynamic_sampling_at_cap in CAP_BEHAVIORS,
            "dynamic_sampling_at_cap",
            self.dynamic_sampling_at_cap,
            f"must be one of {CAP_BEHAVIORS}",
        )
        if self.overlong_buffer_length is not None:
            _check(
                self.max_completion_length is not None
                and 0 < self.overlong_buffer_length < self.max_completion_length,
                "overlong_buffer_length",
                self.overlong_buffer_length,
                f"must be > 0 and < max_completion_length ({self.max_completion_length})",
            )
        _check(
            self.overlong_penalty_factor >= 0, "overlong_penalty_factor", self.overlong_penalty_factor, "must be >= 0"
        )
        # DAPOTrainer owns the loss: TRL options that change TRL's loss would be silently ignored, so refuse them.
        _check(
            self.loss_type == "dapo",
            "loss_type",
            self.loss_type,
            "must be 'dapo'; choose the aggregation with loss_agg_mode",
        )
        for name, default in _UNSUPPORTED_LOSS_OPTIONS.items():
            value = getattr(self, name)
            _check(value == default, name, value, f"is not supported by DAPOTrainer's loss (leave it at {default!r})")

    def _resolve_device(self) -> None:
        """`bf16=None`: bf16 on a bf16-capable accelerator (TRL's default), fp32 without one, instead of an error;
        no memory pinning without an accelerator."""
        has_bf16 = is_torch_bf16_gpu_available() or is_torch_xla_available()
        if self.bf16 is None and not self.fp16 and not has_bf16:
            self.bf16 = False
            logger.warning("dapo_trl: no CUDA GPU with bf16 found: training in fp32 on the CPU (bf16=True to insist).")
        elif self.bf16 and not has_bf16 and not self.use_cpu:
            raise ValueError(
                "DAPOConfig.bf16=True needs a bf16-capable GPU and none was found: leave bf16 unset to train in fp32, "
                "or set use_cpu=True as well to train in bf16 on the CPU."
            )
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for (torch warns on every dataloader otherwise)


# GRPOConfig loss options that DAPOTrainer.compute_loss does not implement, with the value that turns them off.
_UNSUPPORTED_LOSS_OPTIONS = {
    "top_entropy_quantile": 1.0,
    "off_policy_mask_threshold": None,
    "importance_sampling_level": "token",
    "delta": None,
    "entropy_coef": 0.0,
    "use_adaptive_entropy": False,
    "use_liger_kernel": False,
}


def _check(ok: bool, name: str, value, requirement: str) -> None:
    if not ok:
        raise ValueError(f"DAPOConfig.{name}={value!r} {requirement}.")
