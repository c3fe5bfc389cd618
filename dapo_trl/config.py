"""`DAPOConfig`: TRL's `GRPOConfig` with DAPO's defaults and knobs, validated at construction."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields

import torch
from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import GRPOConfig

from .core import IMPORTANCE_SAMPLING_LEVELS, LOSS_AGG_MODES, LOSS_TYPES
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

    Defaults that differ from TRL's (DAPO's): `epsilon_high=0.28` (clip-higher; TRL: same as `epsilon`),
    `mask_truncated_completions=True` (overlong filtering), `dynamic_sampling=True`. TRL's own defaults are already
    DAPO's for the rest: `loss_type="dapo"`, `epsilon=0.2`, `beta=0.0` (no KL term, no reference model). Device: with
    `bf16` unset, bf16 when a bf16-capable accelerator is present (TRL's default), else fp32, with one log line saying
    so (TRL would stop with transformers' "Your setup doesn't support bf16/gpu" error); `bf16=True` insists on bf16.

    Every `GRPOConfig` loss option keeps TRL's meaning and formula: `loss_type` (`"dapo"`, `"grpo"`, `"bnpo"`,
    `"dr_grpo"`, `"cispo"`, `"sapo"`, `"luspo"`, `"vespo"`), `importance_sampling_level`, `delta`,
    `top_entropy_quantile`, `off_policy_mask_threshold`, `entropy_coef`/`use_adaptive_entropy`, the `sapo_*` and
    `vespo_*` parameters, `use_liger_kernel`. Only the normalization differs: every aggregation is over the whole
    optimizer step, counted exactly (see `loss_agg_mode`).

    Parameters:
        > Loss

        epsilon_high (`float` or `None`, *optional*, defaults to `0.28`):
            Upper clip bound (clip-higher): the ratio is clipped above at `1 + epsilon_high`. `None` means the same
            as `epsilon`. With `loss_type="cispo"` it is the cap of the importance weight itself (ScaleRL: `5.0`).
        mask_truncated_completions (`bool`, *optional*, defaults to `True`):
            Overlong filtering: truncated completions are masked out of the loss.
        loss_agg_mode (`str` or `None`, *optional*, defaults to `None`):
            How per-token losses become one scalar, over the whole optimizer step (all gradient-accumulation
            micro-batches and all processes): `"token-mean"` (DAPO), `"seq-mean-token-mean"` (GRPO),
            `"seq-mean-token-sum"` (LUSPO), `"seq-mean-token-sum-norm"` (Dr. GRPO: sum divided by rows times
            `max_completion_length`). `None` follows `loss_type` as TRL does: `grpo`/`sapo` -> `"seq-mean-token-mean"`,
            `dapo`/`bnpo`/`cispo`/`vespo` -> `"token-mean"`, `dr_grpo` -> `"seq-mean-token-sum-norm"`, `luspo` ->
            `"seq-mean-token-sum"`. Set explicitly, it overrides the aggregation of `dapo`, `cispo`, `sapo` and
            `vespo`; `grpo`, `bnpo`, `dr_grpo` and `luspo` are aggregations themselves and refuse another one.
        clip_ratio_c (`float` or `None`, *optional*, defaults to `None`):
            Dual-clip bound for tokens with negative advantage: their loss is capped at `-A * clip_ratio_c`. Must be
            `> 1`; verl uses `3.0`. `None` disables it. Applies to the clipped-ratio losses (`dapo`, `grpo`, `bnpo`,
            `dr_grpo`, `luspo`), refused with `cispo`, `sapo` and `vespo`, which have no ratio surrogate to bound.

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
            each process's remaining rows with masked copies of one of its rows (no loss tokens, none in the
            token-mean denominator; `dr_grpo` still counts them as rows), with a warning and the
            `dynamic_sampling/cap_hit` metric; `"raise"` stops with an error (verl's).

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
    epsilon_high: float | None = field(
        default=0.28,
        metadata={
            "help": "Upper clip bound (clip-higher): the ratio is clipped above at `1 + epsilon_high` (DAPO: 0.28). "
            "`None` means the same as `epsilon`."
        },
    )
    mask_truncated_completions: bool = field(
        default=True,
        metadata={"help": "Overlong filtering: mask truncated completions out of the loss (DAPO: True)."},
    )

    # Loss
    loss_agg_mode: str | None = field(
        default=None,
        metadata={
            "help": "Loss aggregation over the whole optimizer step; `None` follows `loss_type` as TRL does.",
            "choices": list(LOSS_AGG_MODES),
        },
    )
    clip_ratio_c: float | None = field(
        default=None,
        metadata={
            "help": "Dual-clip bound (> 1) for negative-advantage tokens of the clipped-ratio losses; `None` disables "
            "it (verl: 3.0)."
        },
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
            self.clip_ratio_c is None or self.clip_ratio_c > 1,
            "clip_ratio_c",
            self.clip_ratio_c,
            "must be > 1 or None",
        )
        self._check_loss_options()
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

    def _check_loss_options(self) -> None:
        """`loss_type` and the options that only some loss types read: refused where they would be ignored."""
        _check(self.loss_type in LOSS_TYPES, "loss_type", self.loss_type, f"must be one of {tuple(LOSS_TYPES)}")
        surrogate, aggregation = LOSS_TYPES[self.loss_type]
        if self.loss_agg_mode is None:
            self.loss_agg_mode = aggregation
        _check(
            self.loss_agg_mode in LOSS_AGG_MODES,
            "loss_agg_mode",
            self.loss_agg_mode,
            f"must be one of {LOSS_AGG_MODES} or None",
        )
        if self.loss_type in ("grpo", "bnpo", "dr_grpo", "luspo") and self.loss_agg_mode != aggregation:
            raise ValueError(
                f"DAPOConfig.loss_agg_mode={self.loss_agg_mode!r} contradicts loss_type={self.loss_type!r}, which "
                f"aggregates with {aggregation!r}: unset loss_agg_mode, or use loss_type='dapo' with it."
            )
        _check(
            self.importance_sampling_level in IMPORTANCE_SAMPLING_LEVELS,
            "importance_sampling_level",
            self.importance_sampling_level,
            f"must be one of {IMPORTANCE_SAMPLING_LEVELS}",
        )
        _check(
            0.0 <= self.top_entropy_quantile <= 1.0,
            "top_entropy_quantile",
            self.top_entropy_quantile,
            "must be in [0, 1]",
        )
        for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")
        defaults = {f.name: f.default for f in fields(GRPOConfig)}
        defaults["clip_ratio_c"] = None
        for name, surrogates in _SURROGATE_OPTIONS.items():
            value = getattr(self, name)
            if value != defaults[name] and surrogate not in surrogates:
                raise ValueError(
                    f"DAPOConfig.{name}={value!r} has no effect with loss_type={self.loss_type!r}; it applies to "
                    f"loss_type in {_loss_types_using(surrogates)}."
                )

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


# Options read by some policy losses only (dapo_trl.core.POLICY_LOSSES), refused with the others.
_SURROGATE_OPTIONS = {
    "clip_ratio_c": ("clip",),
    "delta": ("clip",),
    "sapo_temperature_pos": ("sapo",),
    "sapo_temperature_neg": ("sapo",),
    "vespo_k_pos": ("vespo",),
    "vespo_lambda_pos": ("vespo",),
    "vespo_k_neg": ("vespo",),
    "vespo_lambda_neg": ("vespo",),
}


def _loss_types_using(surrogates: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name, (surrogate, _) in LOSS_TYPES.items() if surrogate in surrogates)


def _check(ok: bool, name: str, value, requirement: str) -> None:
    if not ok:
        raise ValueError(f"DAPOConfig.{name}={value!r} {requirement}.")
