"""`DAPOTrainer`: TRL's `GRPOTrainer` with DAPO's loss and dynamic sampling. The only module that knows TRL internals."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import numbers
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather, gather_object
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer import grpo_trainer as grpo_trainer_module
from trl.trainer.utils import get_config_model_id, is_async_callable, use_adapter

from . import core
from .config import DAPOConfig
from .model_card import DAPO_PAPER, complete_card
from .quiet import known_warnings_quiet
from .rewards import OVERLONG_REWARD_NAME, overlong_penalty_reward
from .sampling import (
    GroupPool,
    IterablePromptStream,
    PromptStream,
    RoundPlanner,
    ZeroVarianceHistory,
    assign_destinations,
    choose_groups,
    exchange_rows,
    pad_cat,
    wire_code,
    wire_dtype,
)


# Model-input keys TRL may put in a batch (multimodal models); forwarded untouched to the log-prob computation.
_MODEL_INPUT_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
_STATE_FILE = "dapo_state_rank{rank}.pt"


class RewardFunctionError(RuntimeError):
    """A reward function raised or returned something unusable; raised on every process, so none hangs."""


class DAPOTrainer(GRPOTrainer):
    r"""
    Trainer for DAPO (Decoupled Clip and Dynamic sAmpling Policy Optimization, Yu et al. 2025).

    A drop-in for [`~trl.GRPOTrainer`] (same arguments: model id or object, reward functions with weights,
    `peft_config`, eval dataset, callbacks, ...) that takes a [`DAPOConfig`] and changes two things:

    - **the loss** ([`compute_loss`]): TRL's loss for every `loss_type` and option (clip-higher surrogate
      [`dapo_trl.core.policy_loss`] with optional dual-clip, CISPO, SAPO, VESPO, GSPO, masks, entropy bonus, MoE
      router loss), aggregated ([`dapo_trl.core.aggregate_loss`]) over the whole optimizer step: all
      gradient-accumulation micro-batches and all processes, counted exactly per step;
    - **the generation step**: dynamic sampling drops groups whose filter values are all equal (or whose rows that
      reach the loss all have zero advantage) and refills the generation batch with more groups. The decision uses
      gathered scalars only and is identical on every rank; rows stay on the rank that generated them and only the
      rows a rank has no room for move, point to point. Advantages, old and reference log-probs and the vLLM
      importance ratio are computed once, on the final local batch, for the trained rows only. The soft overlong
      punishment is added as the `overlong_penalty` reward; truncated completions are masked.

    Example:
    ```python
    from datasets import Dataset
    from dapo_trl import DAPOConfig, DAPOTrainer
    from dapo_trl.testing import save_tiny_model

    model_dir = save_tiny_model("tiny-model")
    dataset = Dataset.from_dict({"prompt": ["1+1=", "2+2=", "3+3=", "4+4="] * 4})

    def reward_len(completions, **kwargs):
        return [float(len(c) % 2) for c in completions]

    args = DAPOConfig(output_dir="dapo-out", per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, max_steps=2, use_cpu=True, report_to="none")
    DAPOTrainer(model=model_dir, reward_funcs=reward_len, args=args, train_dataset=dataset).train()
    ```
    """

    _tag_names = ["trl", "dapo", "dapo-trl"]
    _name = "DAPO"
    _paper = DAPO_PAPER

    def __init__(self, model, reward_funcs=None, args: DAPOConfig | None = None, *pos, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = DAPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-DAPO")
        elif not isinstance(args, DAPOConfig):
            raise TypeError(
                f"DAPOTrainer needs a DAPOConfig, got {type(args).__name__}. DAPOConfig accepts every GRPOConfig "
                "argument: replace GRPOConfig(...) by DAPOConfig(...)."
            )
        if args.overlong_buffer_length is not None:
            if reward_funcs is None:
                reward_funcs = []
            reward_funcs = list(reward_funcs) if isinstance(reward_funcs, list) else [reward_funcs]
            if any(getattr(f, "__name__", None) == OVERLONG_REWARD_NAME for f in reward_funcs):
                raise ValueError(
                    f"A reward function is named {OVERLONG_REWARD_NAME!r}, the name DAPOConfig.overlong_buffer_length "
                    "gives the soft overlong punishment: rename yours or unset overlong_buffer_length."
                )
            reward_funcs.append(
                overlong_penalty_reward(
                    args.max_completion_length, args.overlong_buffer_length, args.overlong_penalty_factor
                )
            )
            if args.reward_weights is not None:
                args = copy.copy(args)  # the caller's config stays as it was
                args.reward_weights = [*args.reward_weights, 1.0]
            processing = kwargs.get("reward_processing_classes")
            if processing is not None:
                processing = processing if isinstance(processing, list) else [processing]
                kwargs["reward_processing_classes"] = [*processing, None]
        with known_warnings_quiet():  # TRL calls transformers' deprecated gradient_checkpointing_* names
            super().__init__(model, reward_funcs, args, *pos, **kwargs)

        self._reward_errors: list[str] = []
        self.reward_funcs = [
            self._guard_reward(func, name) if callable(func) and not isinstance(func, nn.Module) else func
            for func, name in zip(self.reward_funcs, self.reward_func_names)
        ]

        names = list(self.reward_func_names)
        metric = args.dynamic_sampling_metric
        if metric is not None and metric not in names:
            raise ValueError(
                f"DAPOConfig.dynamic_sampling_metric={metric!r} is not a reward function name; valid: {names}."
            )
        # Filter weights: one reward function, or the weighted task rewards without the length penalty.
        if metric is not None:
            self._filter_weights = torch.tensor([float(n == metric) for n in names])
        else:
            self._filter_weights = self.reward_weights.clone().float()
            if args.overlong_buffer_length is not None:
                self._filter_weights[names.index(OVERLONG_REWARD_NAME)] = 0.0
        processes = self.accelerator.num_processes
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() != processes:
            # Seen with DeepSpeed on GPU-less machines: accelerate counts 1 process while the group has more, and
            # every batch size derived from the process count is then wrong.
            raise ValueError(
                f"accelerate sees {processes} process(es) but torch.distributed has "
                f"{torch.distributed.get_world_size()}. Without GPUs, set DAPOConfig(ddp_backend='gloo') and enable "
                "DeepSpeed through ACCELERATE_USE_DEEPSPEED / accelerate launch rather than `deepspeed=`."
            )
        self._target_groups = args.generation_batch_size // self.num_generations
        # A round of k groups splits evenly over processes when k * num_generations is a multiple of processes.
        self._round_multiple = processes // math.gcd(self.num_generations, processes)
        self._planner = RoundPlanner(
            self._target_groups,
            args.dynamic_sampling_round_size,
            args.dynamic_sampling_max_oversample,
            self._round_multiple,
        )
        self._prompt_stream: PromptStream | None = None  # built on first use (train_dataset may change before)
        self._prompts_total = 0
        self._skip_history = (
            ZeroVarianceHistory(args.dynamic_sampling_skip_explore, args.seed + 2)
            if args.dynamic_sampling_skip_zero_variance
            else None
        )
        self._defer_logps = False
        self._round_text: tuple[list, list] | None = None  # inside a round: (prompts, completions) of the rewards
        self._round_names: bool | None = None  # inside a round: whether any process has log_extra/log_metric names
        self._held_peak = {"bytes": 0, "rows": 0}  # what this rank held at most during the last generation batch
        self._last_rewards_per_func: torch.Tensor | None = None
        self._window_counts: list[torch.Tensor] = []
        generate_every = self._generate_every
        self._windows_aligned = generate_every % args.gradient_accumulation_steps == 0
        if not self._windows_aligned:
            warnings.warn(
                f"steps_per_generation * num_iterations ({generate_every}) is not a multiple of "
                f"gradient_accumulation_steps ({args.gradient_accumulation_steps}): an optimizer step spans several "
                "generation batches, so its token count is estimated as TRL does, not counted exactly.",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ loss

    def train(self, *args, **kwargs):
        with known_warnings_quiet():  # TRL's generation toggles gradient checkpointing through deprecated names
            return super().train(*args, **kwargs)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        *,
        base_model: str | None = None,
        metrics: dict | None = None,
        extra: str | None = None,
        repo_id: str | None = None,
    ):
        """
        Write `args.output_dir/README.md`: TRL's model card (its template, tags and citations), completed with DAPO's
        settings, the training and LoRA settings, `metrics` and `extra` (see `dapo_trl.model_card`).

        Called by TRL at every checkpoint and by `push_to_hub`, and by `dapo_trl.hub.save_for_hub` for the final
        folder, so all of them hold the same document.

        Args:
            model_name, dataset_name, tags: as for TRL's `create_model_card`.
            base_model (`str`, *optional*): Hub id (or local folder) training started from; defaults to the model
                config's `_name_or_path`.
            metrics (`dict`, *optional*): Final metrics, shown in a "Results" table.
            extra (`str`, *optional*): Markdown for an "Additional information" section.
            repo_id (`str`, *optional*): Hub id used in the usage snippet (defaults to `args.hub_model_id`).
        """
        if not self.is_world_process_zero():
            return
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        if getattr(self.accelerator.unwrap_model(self.model), "peft_config", None):
            tags += ["lora", "peft"]
        repo_id = repo_id or self.args.hub_model_id
        if model_name is None:  # the name TRL gives the checkpoints' card
            model_name = (
                repo_id.split("/")[-1] if repo_id else os.path.basename(os.path.normpath(self.args.output_dir))
            )
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        path = os.path.join(self.args.output_dir, "README.md")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        base_model = base_model or get_config_model_id(self.model.config)
        card = complete_card(
            text, self, base_model=base_model, dataset_name=dataset_name, metrics=metrics, extra=extra, repo_id=repo_id
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write(card)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """
        Loss of one micro-batch: TRL's per-token loss for `args.loss_type` (a [`dapo_trl.core.POLICY_LOSSES`] entry,
        with the off-policy and high-entropy masks and the KL term), aggregated with `args.loss_agg_mode` over the
        optimizer step so that its micro-batches (over gradient accumulation and processes) add up to the loss of the
        whole step; then TRL's entropy bonus and MoE router loss.
        """
        if return_outputs:
            raise ValueError("DAPOTrainer does not support returning outputs")
        mode = "train" if self.model.training else "eval"
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = _loss_mask(inputs)

        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _MODEL_INPUT_KEYS},
        )
        old_logps = inputs.get("old_per_token_logps")
        # On-policy (one update per generation), TRL skips the old log-probs: the ratio is exactly 1.
        old_logps = logps.detach() if old_logps is None else old_logps
        loss_mat, metrics, entropy_mask = self._per_token_loss(inputs, logps, old_logps, entropies, mask)
        kl = None
        if self.beta != 0.0:
            kl = core.kl_penalty(logps, inputs["ref_per_token_logps"])
            if self.args.use_bias_correction_kl:  # as TRL: importance-weight the KL (at the sampling level)
                level = self.args.importance_sampling_level
                kl = kl * torch.exp(core.importance_log_weights(logps, old_logps, mask, level))
            loss_mat = loss_mat + self.beta * kl

        tokens, seqs, rows = self._loss_normalizers(inputs, mask)
        processes = self.accelerator.num_processes
        loss = core.aggregate_loss(
            loss_mat,
            mask,
            self.args.loss_agg_mode,
            num_tokens=tokens / processes,
            num_seqs=seqs / processes,
            seq_len=self.max_completion_length,
            num_rows=rows / processes,
        )
        if self._entropy_bonus_enabled:
            loss = loss - self._entropy_bonus(mode, entropies, mask, entropy_mask, tokens / processes)
        if aux_loss is not None:  # MoE load balancing, as TRL: scaled for accumulation, logged per micro-batch
            accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        self._log_loss_metrics(mode, loss_mat, entropies, metrics, kl, mask)
        return loss

    def _per_token_loss(self, inputs, logps, old_logps, entropies, mask):
        """`(B, T)` policy loss of `loss_type` with TRL's off-policy sequence mask and high-entropy token mask."""
        args = self.args
        advantages = inputs["advantages"]
        surrogate = core.LOSS_TYPES[args.loss_type][0]
        loss_mat, metrics = core.POLICY_LOSSES[surrogate](
            logps,
            old_logps,
            advantages,
            mask,
            importance_sampling_ratio=inputs.get("importance_sampling_ratio"),  # vLLM's correction, when on
            **self._policy_loss_options(surrogate),
        )
        if args.off_policy_mask_threshold is not None:
            sampling_logps = inputs.get("sampling_per_token_logps", old_logps)  # the sampler's (vLLM), as TRL
            threshold = args.off_policy_mask_threshold
            loss_mat = loss_mat * core.off_policy_sequence_mask(advantages, logps, sampling_logps, mask, threshold)
        entropy_mask = None
        if args.top_entropy_quantile < 1.0:
            # The quantile is over the loss tokens of every process, as TRL's (-1e9 marks padding).
            pool = self.accelerator.pad_across_processes(entropies[mask.bool()].float(), dim=0, pad_index=-1e9)
            pool = self.accelerator.gather(pool)
            pool = pool[pool != -1e9]
            entropy_mask = core.high_entropy_mask(entropies, mask, args.top_entropy_quantile, pool=pool)
            loss_mat = loss_mat * entropy_mask
        return loss_mat, metrics, entropy_mask

    def _policy_loss_options(self, surrogate: str) -> dict:
        """The config values the policy loss `surrogate` reads (the others are refused by `DAPOConfig`)."""
        args = self.args
        level = {"importance_sampling_level": args.importance_sampling_level}
        if surrogate == "clip":
            clip = {"epsilon_low": self.epsilon_low, "epsilon_high": self.epsilon_high, "delta": args.delta}
            return {**clip, "clip_ratio_c": args.clip_ratio_c, **level}
        if surrogate == "cispo":
            return {"epsilon_high": self.epsilon_high, **level}
        if surrogate == "sapo":
            return {
                "temperature_pos": args.sapo_temperature_pos,
                "temperature_neg": args.sapo_temperature_neg,
                **level,
            }
        # VESPO builds its own sequence-level weight
        return {
            "k_pos": args.vespo_k_pos,
            "lambda_pos": args.vespo_lambda_pos,
            "k_neg": args.vespo_k_neg,
            "lambda_neg": args.vespo_lambda_neg,
        }

    def _entropy_bonus(self, mode, entropies, mask, entropy_mask, num_tokens):
        """
        `coef * H` (objective `L - coef * H`, TRL's `entropy_coef`), H the mean entropy of the loss tokens. Without
        `top_entropy_quantile`, H is the token mean over the optimizer step, counted exactly like the loss; with it,
        the selected tokens are known per micro-batch only, so H is the micro-batch mean over the accumulation steps,
        as TRL. With `use_adaptive_entropy`, TRL's Skywork-OR1 controller (state kept in TRL's attributes, so TRL's
        checkpoint code saves it).
        """
        if entropy_mask is None:
            effective = mask.to(entropies.dtype)
            entropy = core.aggregate_loss(entropies, effective, "token-mean", num_tokens=num_tokens)
        else:
            effective = (mask * entropy_mask).to(entropies.dtype)
            accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
            entropy = core.aggregate_loss(entropies, effective, "token-mean") / accumulation
        coef = self.entropy_coef
        if self.use_adaptive_entropy:
            # The coefficient of the last step, on while the entropy is at or below the target.
            coef = coef if self._last_world_entropy <= self.args.entropy_target else 0.0
            if mode == "train":
                self._update_entropy_control(entropies, effective)
        if mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        return coef * entropy

    def _update_entropy_control(self, entropies, effective):
        """Accumulate the step's entropy; at the optimizer-step boundary update `entropy_coef` from its global mean."""
        stats = torch.stack([(entropies * effective).sum(), effective.sum()]).detach()
        window = self._entropy_window_stats
        self._entropy_window_stats = stats if window is None else window + stats
        if not self.accelerator.sync_gradients:
            return
        total = self.accelerator.reduce(self._entropy_window_stats, reduction="sum")
        world_entropy = (total[0] / total[1].clamp(min=1.0)).item()
        args = self.args
        self.entropy_coef = core.adaptive_entropy_coef(
            self.entropy_coef,
            world_entropy,
            args.entropy_target,
            args.entropy_coef_delta,
            args.entropy_coef_min,
            args.entropy_coef_max,
        )
        self._last_world_entropy = world_entropy
        self._entropy_window_stats = None

    def _loss_normalizers(self, inputs, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        """Global (tokens, sequences, rows) of the loss: the optimizer step's in training, this batch's in eval."""
        if "num_seqs_in_batch" in inputs:
            # Every micro-batch of a step has the same number of rows (TRL splits the generation batch evenly).
            steps, processes = self.current_gradient_accumulation_steps, self.accelerator.num_processes
            rows = inputs.get("num_rows_in_batch", mask.size(0) * steps * processes)
            return inputs["num_items_in_batch"], inputs["num_seqs_in_batch"], rows
        local = torch.stack([mask.sum(), (mask.sum(-1) > 0).sum(), mask.new_tensor(mask.size(0))]).float()
        total = self.accelerator.reduce(local, reduction="sum")
        return total[0], total[1], total[2]

    def _log_loss_metrics(self, mode, loss_mat, entropies, loss_metrics, kl, mask):
        mask = mask.to(loss_mat.dtype)
        count = mask.sum()
        stats = [(loss_mat * mask).sum(), (entropies * mask).sum()]
        stats += [value * count for value in loss_metrics.values()]  # means back to sums for a global mean
        if kl is not None:
            stats.append((kl * mask).sum())
        stats = torch.stack([*stats, count]).detach().float()
        stats = self.accelerator.reduce(stats, reduction="sum")
        # No loss token anywhere (e.g. every completion truncated and masked): NaN, which TRL's `log` leaves out of
        # its averages, rather than a 0 that reads like a real value.
        stats = (stats[:-1] / stats[-1]).tolist()
        names = ["policy_loss", "entropy", *loss_metrics]
        if kl is not None:
            names.append("kl")
        for name, value in zip(names, stats):
            self._metrics[mode][name].append(value)

    # ------------------------------------------------------------------ exact per-step token counts

    def _prepare_inputs(self, generation_batch):
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        generate_every = self._generate_every
        regenerate = self._step % generate_every == 0 or self._buffered_inputs is None
        inputs = super()._prepare_inputs(generation_batch)
        if regenerate:
            self._window_counts = self._count_windows(generate_every)
        window = (self._step % generate_every) // self.args.gradient_accumulation_steps if self._windows_aligned else 0
        tokens, seqs = self._window_counts[window]
        return {**inputs, "num_items_in_batch": tokens, "num_seqs_in_batch": seqs}

    def _count_windows(self, generate_every: int) -> list[torch.Tensor]:
        """Global loss tokens and sequences of each optimizer step served by the buffered generation batch."""
        local = []
        for batch in self._buffered_inputs:
            mask = _loss_mask(batch)
            local.append(torch.stack([mask.sum(), (mask.sum(-1) > 0).sum()]))
        per_slice = self.accelerator.reduce(torch.stack(local).float(), reduction="sum")  # (steps_per_generation, 2)
        spg, accumulation = self.args.steps_per_generation, self.args.gradient_accumulation_steps
        if not self._windows_aligned:  # a step spans generations: TRL's estimate
            return [per_slice.sum(0) * accumulation / spg]
        return [
            sum(per_slice[step % spg] for step in range(start, start + accumulation))
            for start in range(0, generate_every, accumulation)
        ]

    # ------------------------------------------------------------------ generation: dynamic sampling

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._reward_errors = []
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # Every process reaches this point (failed rewards were replaced by None), so all can stop together. The same
        # gather tells a round whether any process has log_extra columns or log_metric values for TRL to flush.
        pending = [bool(self._reward_errors), bool(self._pending_extra_logs), bool(self._pending_metrics)]
        flags = torch.tensor(pending, dtype=torch.uint8, device=rewards_per_func.device)
        if self.accelerator.num_processes > 1:
            flags = gather(flags)
        flags = flags.view(-1, len(pending)).bool()
        if flags[:, 0].any():
            errors = gather_object(self._reward_errors) if self.accelerator.num_processes > 1 else self._reward_errors
            raise RewardFunctionError("\n".join(errors))
        self._last_rewards_per_func = rewards_per_func  # gathered over processes: the filter's input
        if self._defer_logps:  # inside a round: these lists are what TRL then gathers for its completions table
            self._round_text = (prompts, completions)
            self._round_names = bool(flags[:, 1:].any())
        return rewards_per_func

    def _guard_reward(self, func, name: str):
        """Wrap a reward function (sync or async) so that failures name the function, the process and the rows
        involved, and bad outputs (wrong count, non-numbers, infinities) are rejected; `None` and NaN stay
        "unscorable" as in TRL. A failure returns `None` rows; `_calculate_rewards` then raises on every process."""

        def report(problem: str, prompts) -> list[None]:
            where = f"process {self.accelerator.process_index}, step {self.state.global_step}"
            sample = repr(prompts[0])[:80] if prompts else ""
            self._reward_errors.append(f"Reward function {name!r} {problem} [{where}; first prompt: {sample}]")
            return [None] * len(prompts)

        if is_async_callable(func):

            @functools.wraps(func)
            async def guarded_async(prompts=None, completions=None, completion_ids=None, **kwargs):
                try:
                    values = await func(
                        prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs
                    )
                    problem = _reward_problem(values, len(prompts))
                except Exception as error:  # noqa: BLE001 - reported on every process
                    problem = f"raised {type(error).__name__}: {error}"  # no row-by-row retry of async calls
                return values if problem is None else report(problem, prompts)

            return guarded_async

        @functools.wraps(func)
        def guarded(prompts=None, completions=None, completion_ids=None, **kwargs):
            try:
                values = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
                problem = _reward_problem(values, len(prompts))
            except Exception as error:  # noqa: BLE001 - reported on every process
                rows = _failing_rows(func, prompts, completions, completion_ids, kwargs)
                problem = f"raised {type(error).__name__}: {error}" + (f" (rows {rows})" if rows else "")
            return values if problem is None else report(problem, prompts)

        return guarded

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._defer_logps:
            # Inside a dynamic-sampling round: every log-prob is computed later, on the final local batch.
            return input_ids.new_full((input_ids.size(0), logits_to_keep), math.nan, dtype=torch.float32), None, None
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )

    def _generate_and_score_completions(self, inputs):
        if not (self.model.training and self.args.dynamic_sampling):
            return super()._generate_and_score_completions(inputs)
        return self._dynamic_sampling(inputs)

    @property
    def _generate_every(self) -> int:
        """Micro-steps between two generations (TRL: one generation batch serves steps_per_generation * num_iterations)."""
        return self.args.steps_per_generation * self.num_iterations

    @property
    def _needs_old_logps(self) -> bool:
        # TRL's rule: old log-probs are needed unless every optimizer step starts with a fresh generation.
        return self.args.gradient_accumulation_steps % self._generate_every != 0

    def _new_prompt_stream(self) -> PromptStream | IterablePromptStream:
        # Its own seed, and shuffled even with shuffle_dataset=False: replaying the main sampler's order would put the
        # same prompts twice in one generation batch.
        if hasattr(self.train_dataset, "__getitem__") and hasattr(self.train_dataset, "__len__"):
            return PromptStream(len(self.train_dataset), self.args.seed + 1)
        return IterablePromptStream(self.train_dataset, self.args.seed + 1)

    def _stream_groups(self, state: _Batch, n: int) -> list:
        """`n` fresh prompts, the same on every rank: dataset indices (every rank reads each drawn prompt to pass over
        repeats, but materializes only the rows it generates for) or, for an iterable dataset, the rows themselves. A
        prompt already in this generation batch, or known to be zero-variance (GRESO), is passed over while the dataset
        has others."""
        if self._prompt_stream is None:
            self._prompt_stream = self._new_prompt_stream()
        stream, seen = self._prompt_stream, self._batch_keys(state)
        indexable = isinstance(stream, PromptStream)
        groups, tries, duplicates, epoch = [], 0, 0, stream.epoch
        while len(groups) < n:
            (item,) = stream.take(1)
            tries += 1
            # After a whole dataset of passes-over every prompt is known: stop filtering rather than loop forever.
            filtering = tries <= n + len(self.train_dataset) if indexable else stream.epoch <= epoch + 1
            if filtering:
                prompt = (self.train_dataset[item] if indexable else item)["prompt"]
                key = ZeroVarianceHistory.key(prompt)
                if key in seen:
                    duplicates += 1  # passed over (logged as prompts_repeated), not a prompt consumed
                    continue
                if self._skip_history is not None and self._skip_history.skip(prompt):
                    state.skipped += 1
                    continue
                seen.add(key)
            groups.append(item)
        state.prompts += tries - duplicates
        state.repeated += duplicates
        return groups

    def _batch_keys(self, state: _Batch) -> set[str]:
        """Keys of the prompts already in this generation batch (the dataloader's: one small gather, on first use)."""
        if state.seen is None:
            keys = [ZeroVarianceHistory.key(row["prompt"]) for row in state.dataloader_rows]
            if self.accelerator.num_processes > 1:  # every rank has as many: the digests' bytes, no pickles
                digests = torch.tensor([list(bytes.fromhex(key)) for key in keys], dtype=torch.uint8)
                keys = [bytes(row).hex() for row in gather(digests.to(self.accelerator.device)).tolist()]
            state.seen = set(keys)
        return state.seen

    def _group_rows(self, local_rows: list[dict], groups: list[int]) -> list[dict]:
        """The dataset row of each of the round's `groups` (global group ids), from the ranks that hold them: one
        small object per group, never the generated tensors."""
        group, per_rank = self.num_generations, len(local_rows)
        start = self.accelerator.process_index * per_rank
        mine = [(g, local_rows[g * group - start]) for g in groups if start <= g * group < start + per_rank]
        found = dict(gather_object(mine) if self.accelerator.num_processes > 1 else mine)
        return [found[g] for g in groups]

    def _first_round(self, state: _Batch, inputs: list[dict]) -> tuple[list, list[dict] | None]:
        """The first round: the dataloader's prompts, minus known zero-variance ones (GRESO), plus the adaptive
        oversampling. Without either change the rows stay where the dataloader put them."""
        n_groups = len(inputs) * self.accelerator.num_processes // self.num_generations
        state.prompts += n_groups
        extra = self._planner.first_round_extra() if self.args.dynamic_sampling_source == "new_prompts" else 0
        if self._skip_history is None and extra == 0:
            # The rows stay where the dataloader put them; the group ids only stand for them (no history to record).
            return list(range(n_groups)), list(inputs)
        groups = self._group_rows(list(inputs), list(range(n_groups)))
        state.seen = {ZeroVarianceHistory.key(row["prompt"]) for row in groups}
        if self._skip_history is not None:
            kept = [row for row in groups if not self._skip_history.skip(row["prompt"])]
            state.skipped += len(groups) - len(kept)
            extra += len(groups) - len(kept)
            groups = kept
        return groups + self._stream_groups(state, extra), None

    def _local_rows(self, groups: list) -> list[dict]:
        """This rank's slice of a round (groups contiguous, rank-major as TRL and vLLM expect)."""
        group, processes = self.num_generations, self.accelerator.num_processes
        per_rank = len(groups) * group // processes
        start = self.accelerator.process_index * per_rank
        rows = []
        for i in range(start, start + per_rank):
            item = groups[i // group]
            rows.append(copy.copy(item) if isinstance(item, dict) else self.train_dataset[item])
        return rows

    @contextlib.contextmanager
    def _generation_round(self):
        """Inside a round: log-probs deferred; TRL's per-round metrics and completion logs captured, so that what is
        logged can be what was trained."""
        metrics, logs = self._metrics["train"], self._logs
        self._metrics["train"], self._logs = defaultdict(list), _empty_logs()
        self._defer_logps, self._round_text, self._round_names = True, None, None
        captured = {}
        try:
            with self._local_table_gathers():
                yield captured
        finally:
            self._defer_logps, self._round_text, self._round_names = False, None, None
            captured["metrics"], captured["logs"] = self._metrics["train"], self._logs
            self._metrics["train"], self._logs = metrics, logs

    @contextlib.contextmanager
    def _local_table_gathers(self):
        """During a round, TRL's gathers of the completions table's text (prompts, completions, `log_extra` values)
        stay local: most rows are dropped or stay where they were generated, and the trained rows' text is gathered
        once per generation batch (`_log_trained_table`). The gathers of column and metric *names* run when some
        process has names (every rank then makes the same collective calls in the same order); when none has any,
        which every rank knows from the reward gather (`_round_names`), each name list is empty everywhere and stays
        local too."""
        if self.accelerator.num_processes == 1:
            yield
            return
        gather_all = grpo_trainer_module.gather_object

        def gather_object_outside_table(obj):
            if self._is_round_text(obj):
                return list(obj)
            if self._round_names is False and isinstance(obj, list) and not obj:
                return []
            return gather_all(obj)

        grpo_trainer_module.gather_object = gather_object_outside_table
        try:
            yield
        finally:
            grpo_trainer_module.gather_object = gather_all

    def _is_round_text(self, obj) -> bool:
        """Whether `obj` is one of the round's per-row text lists, decided the same way on every rank: the very
        prompt/completion lists the rewards saw, a pending `log_extra` column, or the all-None stand-in TRL sends for
        a column this rank did not log. Column-name lists are strings, never any of these."""
        if self._round_text is None or not isinstance(obj, list):
            return False
        prompts, completions = self._round_text
        if obj is prompts or obj is completions:
            return True
        if any(obj is values for values in self._pending_extra_logs.values()):
            return True
        return len(obj) == len(prompts) and all(value is None for value in obj)

    def _dynamic_sampling(self, inputs: list[dict]) -> dict:
        args, processes = self.args, self.accelerator.num_processes
        state = _Batch(GroupPool(self.num_generations), self._target_groups, len(inputs), [0] * processes)
        state.dataloader_rows = inputs
        groups, local_rows = self._first_round(state, inputs)
        cap_hit = False
        while True:
            keep, local_rows = self._sample_round(state, groups, local_rows)
            if state.chosen_groups >= state.target:
                break
            if 0 < args.max_num_gen_batches <= state.pool.rounds:
                cap_hit = True
                break
            missing = state.target - state.chosen_groups
            if args.dynamic_sampling_source == "new_prompts":
                groups = self._stream_groups(state, self._planner.next_round(missing))
            else:  # the dropped prompts of the last round, again (repeated to split evenly over processes)
                dropped = self._group_rows(local_rows, [g for g, k in enumerate(keep.tolist()) if not k])
                n = -(-len(dropped) // self._round_multiple) * self._round_multiple
                groups = [dropped[i % len(dropped)] for i in range(n)]
            local_rows = None
        if cap_hit:
            self._at_cap(state)
        local = self._assemble(state)
        self._log_batch(state, cap_hit)
        return local

    def _sample_round(self, state: _Batch, groups: list, local_rows: list[dict] | None) -> tuple[torch.Tensor, list]:
        """Generate and score one round, decide it (identically on every rank, from gathered scalars), and place its
        newly kept rows. Returns the round's keep mask and this rank's rows of it."""
        group = self.num_generations
        local_rows = self._local_rows(groups) if local_rows is None else local_rows
        with self._generation_round() as captured:
            output = super()._generate_and_score_completions(local_rows)
        reaches_loss, widths, wire = self._round_info(output)
        rewards_per_func = self._last_rewards_per_func.cpu()
        values, rewards = self._filter_values(rewards_per_func)
        weights = self.reward_weights.cpu().float()
        aggregation = self.args.multi_objective_aggregation
        carries = core.group_carries_gradient(rewards_per_func, weights, reaches_loss, group, aggregation)
        keep = state.pool.add(values, carries)
        self._planner.observe(len(keep), int(keep.sum()))
        if self._skip_history is not None:
            prompts = [g["prompt"] if isinstance(g, dict) else self.train_dataset[g]["prompt"] for g in groups]
            # Zero variance of the filter metric, not "no gradient": a truncated informative group may pay off later.
            varies = core.group_keep_mask(values, group, state.pool.atol)
            self._skip_history.record(prompts, (~varies).tolist())

        zero_std = core.group_advantages(rewards_per_func, weights, group, self.args.scale_rewards, aggregation)[1]
        state.round_metrics.append((captured["metrics"], len(values)))
        state.generated.append((rewards, zero_std))
        # Held for the final batch plus the round in flight: dropped rows are freed when this round returns.
        state.peak_bytes = max(state.peak_bytes, state.held_bytes + _nbytes(_row_tensors(output)))
        state.peak_rows = max(state.peak_rows, len(state.held_index) + output["prompt_ids"].size(0))
        kept = [g for g, k in enumerate(keep.tolist()) if k]
        per_rank = output["prompt_ids"].size(0)
        owners = [[(g * group + i) // per_rank for i in range(group)] for g in kept]
        picked = choose_groups(owners, state.loads, state.capacity, state.target - state.chosen_groups)
        chosen = [kept[j] * group + i for j in picked for i in range(group)]
        first = state.chosen_rows
        self._place_rows(state, output, chosen, widths, wire)
        state.chosen_rewards.append(rewards_per_func[chosen])
        state.table.extend(_table_rows(captured["logs"], chosen, first, self.accelerator.process_index, per_rank))
        state.filler_source = {key: value[:1].clone() for key, value in _row_tensors(output).items()}
        return keep, local_rows

    def _round_info(self, output: dict) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.dtype]]]:
        """The decision's only collective beyond TRL's reward gather, one byte per row: whether the row reaches the
        loss. Per rank it adds its `(prompt, completion)` widths, whether it met something unsupported (so every rank
        raises, none waits) and the dtype each of its row tensors travels in if sent (`wire_code`): what a receiver
        needs to size the rows it is sent."""
        unsupported = [key for key in _MODEL_INPUT_KEYS if key in output]
        rows = _row_tensors(output)
        keys = sorted(rows)
        widths = torch.tensor([output["prompt_ids"].size(1), output["completion_ids"].size(1)], dtype=torch.int32)
        flags = torch.tensor([bool(unsupported), *(wire_code(rows[key]) for key in keys)], dtype=torch.uint8)
        reaches = (_loss_mask(output).sum(1) > 0).to(torch.uint8).cpu()
        info = torch.cat([widths.view(torch.uint8), flags, reaches]).to(self.accelerator.device)
        processes = self.accelerator.num_processes
        info = (gather(info) if processes > 1 else info).view(processes, -1).cpu()
        end = 8 + len(flags)  # the widths' 8 bytes, the flags, then one byte per row
        widths = info[:, :8].clone(memory_format=torch.contiguous_format).view(torch.int32)  # rows of 8 bytes
        flags, reaches = info[:, 8:end], info[:, end:]
        if flags[:, 0].any():
            raise NotImplementedError(
                f"Dynamic sampling does not support multimodal batches yet (found {unsupported or 'images'} on some "
                "process); set DAPOConfig.dynamic_sampling=False."
            )
        wire = [{key: wire_dtype(int(code), rows[key].dtype) for key, code in zip(keys, codes[1:])} for codes in flags]
        return reaches.reshape(-1).bool(), widths, wire

    def _place_rows(self, state: _Batch, output: dict, chosen: list[int], widths: torch.Tensor, wire: list) -> None:
        """Keep this rank's chosen rows that stay here and exchange only those that must move (`chosen`: rows of the
        round, global, in chosen order), in the dtypes their sender announced (`wire`, exact). Every rank computes
        the same placement; nothing else is sent."""
        rank, per_rank = self.accelerator.process_index, output["prompt_ids"].size(0)
        owners = [row // per_rank for row in chosen]
        dest = assign_destinations(owners, state.loads, state.capacity)
        rows = _row_tensors(output)
        base = state.chosen_rows
        outgoing, incoming, arrivals = {}, {}, {}
        for i, (row, owner, to) in enumerate(zip(chosen, owners, dest)):
            if owner == rank and to != rank:
                outgoing.setdefault(to, []).append(row - rank * per_rank)
            elif to == rank and owner != rank:
                arrivals.setdefault(owner, []).append(base + i)
        mine = wire[rank]
        outgoing = {to: {k: v[index].to(mine[k]) for k, v in rows.items()} for to, index in outgoing.items()}
        for src, index in arrivals.items():
            incoming[src] = {k: (_row_shape(k, v, len(index), widths[src]), wire[src][k]) for k, v in rows.items()}
        received = exchange_rows(outgoing, incoming, self.accelerator.device) if outgoing or incoming else {}
        received = {src: {k: v.to(rows[k].dtype) for k, v in part.items()} for src, part in received.items()}
        stay = [i for i, (owner, to) in enumerate(zip(owners, dest)) if owner == rank == to]
        if stay:
            local = torch.tensor([chosen[i] - rank * per_rank for i in stay], device=output["prompt_ids"].device)
            state.add_rows({key: value[local] for key, value in rows.items()}, [base + i for i in stay])
        for src in sorted(received):
            state.add_rows(received[src], arrivals[src])
        for to in dest:
            state.loads[to] += 1
        state.moved += sum(owner != to for owner, to in zip(owners, dest))

    def _filter_values(self, rewards_per_func: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(rows,)` filter metric and weighted total reward; rows whose rewards are all None/NaN are NaN."""
        rewards = (rewards_per_func * self.reward_weights.cpu()).nansum(dim=1)
        values = (rewards_per_func * self._filter_weights).nansum(dim=1)
        # A row whose filter rewards are all None/NaN is unscorable: NaN, so it cannot make a group look informative.
        used = self._filter_weights != 0
        values[torch.isnan(rewards_per_func[:, used]).all(dim=1)] = math.nan
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = math.nan
        return values, rewards

    def _at_cap(self, state: _Batch) -> None:
        message = (
            f"Dynamic sampling hit max_num_gen_batches={self.args.max_num_gen_batches} with "
            f"{state.chosen_groups}/{state.target} groups carrying signal ({state.pool.generated} generated)."
        )
        if self.args.dynamic_sampling_at_cap == "raise":
            raise RuntimeError(
                message
                + " Raise max_num_gen_batches, or set dynamic_sampling_at_cap='fill' to train on what was kept."
            )
        warnings.warn(message + " Training on the kept groups; filler rows are masked out of the loss.", stacklevel=3)

    def _assemble(self, state: _Batch) -> dict:
        """The final local batch: the rows placed here (plus masked filler at the round cap), trimmed, then what is
        computed from rows, on this layout: advantages of the kept groups, old/reference log-probs, vLLM IS ratio."""
        parts, index = list(state.held), list(state.held_index)
        deficit = state.capacity - len(index)
        if deficit:  # round cap: masked copies of a row, so every rank runs the same forward passes
            filler = {
                key: value.repeat(deficit, *[1] * (value.dim() - 1)) for key, value in state.filler_source.items()
            }
            filler["completion_mask"] = torch.zeros_like(filler["completion_mask"])
            parts.append(filler)
            index += [-1] * deficit
        pad_id = self._tokenizer.pad_token_id
        pad = {
            "prompt_ids": (pad_id, True),
            "prompt_mask": (0, True),
            "completion_ids": (pad_id, False),
            "tool_mask": (1, False),
        }
        batch = {key: pad_cat([part[key] for part in parts], *pad.get(key, (0, False))) for key in parts[0]}
        batch = self._trim_padding(batch)
        advantages = self._advantages(state)
        index = torch.tensor(index)
        local = torch.where(index >= 0, advantages[index.clamp(min=0)], torch.zeros(()))
        batch["advantages"] = local.to(self.accelerator.device)
        self._score_batch(batch)
        batch["num_items_in_batch"] = self.accelerator.gather(_loss_mask(batch).sum()).sum()
        self._log_trained_table(state, advantages)
        return batch

    def _advantages(self, state: _Batch) -> torch.Tensor:
        """Group-relative advantages of the kept groups (chosen order); `scale_rewards="batch"` and
        `normalize_then_sum` take their statistics over the trained batch."""
        if not state.chosen_rewards or state.chosen_rows == 0:
            return torch.zeros(1)
        rewards = torch.cat(state.chosen_rewards)
        weights = self.reward_weights.cpu().float()
        aggregation = self.args.multi_objective_aggregation
        return core.group_advantages(rewards, weights, self.num_generations, self.args.scale_rewards, aggregation)[0]

    def _score_batch(self, batch: dict) -> None:
        """Every log-prob the loss needs, once, on the final local batch (so positions match `compute_loss`)."""
        correct_is = self.use_vllm and self.vllm_importance_sampling_correction
        if self._needs_old_logps or correct_is:
            batch["old_per_token_logps"] = self._old_logps(batch)
        if correct_is:
            ratio = core.importance_sampling_ratio(
                batch["old_per_token_logps"],
                batch["sampling_per_token_logps"],
                _loss_mask(batch),
                self.vllm_importance_sampling_mode,
                self.vllm_importance_sampling_clip_min,
                self.vllm_importance_sampling_clip_max,
            )
            batch["importance_sampling_ratio"] = ratio
            self._log_importance_sampling(batch, ratio)
        if self.beta != 0.0:
            batch["ref_per_token_logps"] = self._ref_logps(batch)

    @torch.no_grad()
    def _score(self, model, batch: dict) -> torch.Tensor:
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                batch["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size,
            )
        return logps

    def _old_logps(self, batch: dict) -> torch.Tensor:
        return self._score(self.model, batch)

    def _ref_logps(self, batch: dict) -> torch.Tensor:
        """Reference log-probs as TRL takes them: the reference model, else the base model under the adapter."""
        if self.ref_model is not None:
            return self._score(self.ref_model, batch)
        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            return self._score(self.model, batch)

    def _log_importance_sampling(self, batch: dict, ratio: torch.Tensor) -> None:
        """TRL's `sampling/*` metrics, from the trained rows (in a round they would describe deferred log-probs)."""
        mask = _loss_mask(batch).bool()
        delta = torch.abs(batch["old_per_token_logps"] - batch["sampling_per_token_logps"])
        delta = delta[mask & ~torch.isnan(delta)]
        sequence_level = self.vllm_importance_sampling_mode.startswith("sequence")
        flat = ratio.flatten() if sequence_level else ratio[mask]
        zero = torch.zeros((), device=ratio.device)
        stats = {
            "sampling/sampling_logp_difference/mean": (delta.mean() if delta.numel() else zero, "mean"),
            "sampling/sampling_logp_difference/max": (delta.max() if delta.numel() else zero, "max"),
            "sampling/importance_sampling_ratio/min": (flat.min() if flat.numel() else zero, "min"),
            "sampling/importance_sampling_ratio/mean": (flat.mean() if flat.numel() else zero, "mean"),
            "sampling/importance_sampling_ratio/max": (flat.max() if flat.numel() else zero, "max"),
        }
        for name, (value, how) in stats.items():
            gathered = self.accelerator.gather(value.reshape(1))
            reduced = {
                "mean": gathered.nanmean(),
                "max": gathered.nan_to_num(-math.inf).max(),
                "min": gathered.nan_to_num(math.inf).min(),
            }[how]
            self._metrics["train"][name].append(reduced.item())

    def _log_trained_table(self, state: _Batch, advantages: torch.Tensor) -> None:
        """TRL's completions table gets the trained rows (with their advantages), not the last round's. Their text is
        gathered here, once per generation batch, and only when the table is logged."""
        rows = state.table
        if self.accelerator.num_processes > 1 and self.log_completions:
            rows = sorted(gather_object(rows), key=lambda row: row["order"])
        # Every column on every row (None where a round did not log it), so the table's columns stay aligned.
        columns = list(dict.fromkeys(column for row in rows for column in row["extra"]))
        for row in rows:
            self._logs["prompt"].append(row["prompt"])
            self._logs["completion"].append(row["completion"])
            for name, value in row["rewards"].items():
                self._logs["rewards"][name].append(value)
            for column in columns:
                self._logs["extra"][column].append(row["extra"].get(column))
            self._logs["advantages"].append(advantages[row["order"]].item())

    def _log_batch(self, state: _Batch, cap_hit: bool) -> None:
        """Per-round TRL metrics merged with row weights, and both sides of the filter."""
        metrics = self._metrics["train"]
        for name, value in _merge_round_metrics(state.round_metrics).items():
            if name == "num_tokens":  # a running total that TRL assigns rather than appends
                metrics[name] = [value]
            else:
                metrics[name].append(value)
        rewards = torch.cat([r for r, _ in state.generated])
        metrics["frac_reward_zero_std"].append(torch.cat([z for _, z in state.generated]).float().mean().item())
        pool, kept = state.pool, state.chosen_groups
        kept_rewards = torch.cat(state.chosen_rewards) if kept else None
        self._prompts_total += state.prompts
        ds = {
            "rounds": pool.rounds,
            "groups_generated": pool.generated,
            "groups_kept": kept,
            "groups_surplus": max(len(pool.kept) - state.target, 0),
            "groups_filler": state.target - kept,
            "groups_no_gradient": pool.no_gradient,
            "cap_hit": float(cap_hit),
            "keep_rate": len(pool.kept) / pool.generated,
            "prompts_consumed": state.prompts,
            "prompts_consumed_total": self._prompts_total,
            "prompts_skipped": state.skipped,
            "prompts_repeated": state.repeated,
            "dropped_all_max_frac": pool.at_max / pool.generated,
            "dropped_all_min_frac": pool.at_min / pool.generated,
            "reward_before": torch.nanmean(rewards).item(),
            "reward_after": math.nan
            if kept_rewards is None
            else torch.nanmean(self._filter_values(kept_rewards)[1]).item(),
            "rows_moved_frac": state.moved / max(state.chosen_rows, 1),
        }
        for name, value in ds.items():
            metrics[f"dynamic_sampling/{name}"].append(float(value))
        self._held_peak = {"bytes": state.peak_bytes, "rows": state.peak_rows}

    def _trim_padding(self, batch: dict) -> dict:
        """Drop prompt/completion columns that are padding on every local row (rows came from several rounds)."""
        multiple = self.pad_to_multiple_of or 1
        prompt_width = batch["prompt_ids"].size(1)
        used = batch["prompt_mask"].any(dim=0).nonzero()
        start = int(used[0]) if len(used) else prompt_width - 1
        start = max(prompt_width - -(-(prompt_width - start) // multiple) * multiple, 0)
        completion_width = batch["completion_ids"].size(1)
        used = batch["completion_mask"].any(dim=0).nonzero()
        end = int(used[-1]) + 1 if len(used) else 1
        end = min(-(-end // multiple) * multiple, completion_width)
        out = {}
        for key, value in batch.items():
            if key.startswith("prompt_"):
                value = value[:, start:]
            elif value.dim() >= 2 and value.size(1) == completion_width:
                value = value[:, :end]
            out[key] = value
        return out

    # ------------------------------------------------------------------ checkpoint state

    def _save_checkpoint(self, model, trial):
        # Written before the checkpoint itself, so a checkpoint that exists always has it.
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        os.makedirs(folder, exist_ok=True)
        torch.save(self._dapo_state(), os.path.join(folder, _STATE_FILE.format(rank=self.accelerator.process_index)))
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if not checkpoint:
            return
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        path = os.path.join(checkpoint, _STATE_FILE.format(rank=rank))
        if os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("processes", processes) == processes:
                self._load_dapo_state(state)
                return
        shared = os.path.join(checkpoint, _STATE_FILE.format(rank=0))
        if not os.path.exists(shared):
            return  # a checkpoint written without dynamic-sampling state (e.g. by GRPOTrainer)
        # Written by a different number of processes: the per-rank buffered batch cannot be reused, so keep the
        # state every rank shares (identical on all of them) and regenerate, like TRL does after a resume.
        warnings.warn(
            f"{checkpoint} was written by a different number of processes: resuming with the shared "
            "dynamic-sampling state and a fresh generation batch (not bit-exact).",
            stacklevel=2,
        )
        state = torch.load(shared, map_location="cpu", weights_only=False)
        self._load_dapo_state({**state, "buffered_inputs": None, "window_counts": []})

    def _dapo_state(self) -> dict:
        """What a resumed run needs to continue exactly: the buffered generation batch (a checkpoint can fall
        between two generations) and the dynamic-sampling state (prompt stream, keep-rate estimate, history)."""
        buffered = None
        if self._buffered_inputs is not None:
            buffered = [
                {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                for batch in self._buffered_inputs
            ]
        return {
            "processes": self.accelerator.num_processes,
            "step": self._step,
            "buffered_inputs": buffered,
            "window_counts": [counts.cpu() for counts in self._window_counts],
            "prompt_stream": self._prompt_stream.state_dict() if self._prompt_stream is not None else None,
            "planner": self._planner.state_dict(),
            "skip_history": self._skip_history.state_dict() if self._skip_history is not None else None,
            "prompts_total": self._prompts_total,
        }

    def _load_dapo_state(self, state: dict) -> None:
        device = self.accelerator.device
        self._step = state["step"]
        self._buffered_inputs = None
        if state["buffered_inputs"] is not None:
            self._buffered_inputs = [
                {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                for batch in state["buffered_inputs"]
            ]
        self._window_counts = [counts.to(device) for counts in state["window_counts"]]
        if state["prompt_stream"] is not None:
            self._prompt_stream = self._new_prompt_stream()
            self._prompt_stream.load_state_dict(state["prompt_stream"])
        self._planner.load_state_dict(state["planner"])
        if self._skip_history is not None and state["skip_history"] is not None:
            self._skip_history.load_state_dict(state["skip_history"])
        self._prompts_total = state["prompts_total"]


# Keys computed from the rows after assembly: never moved between processes.
_RECOMPUTED_KEYS = ("advantages", "old_per_token_logps", "ref_per_token_logps", "importance_sampling_ratio")
# TRL per-round metrics that describe deferred log-probs or rank-major groups: recomputed after assembly.
_RECOMPUTED_METRICS = ("frac_reward_zero_std", "sampling/")


@dataclass
class _Batch:
    """What one generation batch of dynamic sampling holds on this rank: the decisions (same on every rank) and the
    rows placed here, never more than `capacity` of them."""

    pool: GroupPool
    target: int  # groups in the global batch
    capacity: int  # rows per rank in the final batch
    loads: list[int]  # rows placed on each rank so far (same on every rank)
    held: list[dict] = field(default_factory=list)
    held_index: list[int] = field(default_factory=list)  # position of each held row in the chosen order
    chosen_rewards: list[torch.Tensor] = field(default_factory=list)  # (rows, functions) per round, chosen order
    table: list[dict] = field(default_factory=list)  # completions-table entries of the chosen rows
    round_metrics: list[tuple[dict, int]] = field(default_factory=list)  # TRL's metrics of each round, its rows
    generated: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (rewards, zero std) per round
    filler_source: dict | None = None
    dataloader_rows: list[dict] = field(default_factory=list)
    seen: set[str] | None = None  # keys of the prompts in this generation batch, once needed
    prompts: int = 0
    skipped: int = 0
    repeated: int = 0  # stream prompts passed over: already in this generation batch
    moved: int = 0
    held_bytes: int = 0
    peak_bytes: int = 0
    peak_rows: int = 0

    @property
    def chosen_rows(self) -> int:
        return sum(self.loads)

    @property
    def chosen_groups(self) -> int:
        return self.chosen_rows // self.pool.num_generations

    def add_rows(self, rows: dict, index: list[int]) -> None:
        self.held.append(rows)
        self.held_index.extend(index)
        self.held_bytes += _nbytes(rows)


def _empty_logs() -> dict:
    """The layout of TRL's `_logs`, unbounded, to capture one round."""
    return {
        "images": [],
        "prompt": [],
        "completion": [],
        "rewards": defaultdict(list),
        "advantages": [],
        "extra": defaultdict(list),
    }


def _table_rows(logs: dict, chosen: list[int], first: int, rank: int, per_rank: int) -> list[dict]:
    """Completions-table entries of this rank's rows among a captured round's `chosen` rows (global indices). Text and
    `log_extra` values were kept local (this rank's rows), rewards are global; `order` is the row's place in the
    trained batch, whose first row of this round is `first`."""
    start = rank * per_rank
    return [
        {
            "order": first + j,
            "prompt": logs["prompt"][row - start],
            "completion": logs["completion"][row - start],
            "rewards": {name: values[row] for name, values in logs["rewards"].items()},
            "extra": {
                name: values[row - start] for name, values in logs["extra"].items() if row - start < len(values)
            },
        }
        for j, row in enumerate(chosen)
        if start <= row < start + per_rank
    ]


def _row_tensors(output: dict) -> dict[str, torch.Tensor]:
    """The per-row tensors of a round's output that travel with a row (not those computed after assembly)."""
    rows = output["prompt_ids"].size(0)
    return {
        key: value
        for key, value in output.items()
        if isinstance(value, torch.Tensor)
        and value.dim() >= 1
        and value.size(0) == rows
        and key not in _RECOMPUTED_KEYS
    }


def _row_shape(key: str, like: torch.Tensor, rows: int, widths: torch.Tensor) -> tuple[int, ...]:
    """Shape of `rows` rows of `key` as another rank holds them (its `(prompt, completion)` widths)."""
    if like.dim() == 1:
        return (rows,)
    width = int(widths[0]) if key.startswith("prompt_") else int(widths[1])
    return (rows, width, *like.shape[2:])


def _nbytes(tensors: dict) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))


def _merge_round_metrics(rounds: list[tuple[dict, int]]) -> dict[str, float]:
    """TRL's per-round metrics as one value per generation batch: weighted by the rounds' rows, max/min of
    max/min metrics, the last value of running totals."""
    merged = {}
    for name in dict.fromkeys(key for metrics, _ in rounds for key in metrics):
        if name.startswith(_RECOMPUTED_METRICS):
            continue
        pairs = [(v, rows) for metrics, rows in rounds for v in metrics.get(name, []) if not math.isnan(v)]
        if not pairs:
            continue
        last = name.rsplit("/", 1)[-1]
        if name == "num_tokens":
            merged[name] = pairs[-1][0]
        elif last.startswith("max"):
            merged[name] = max(v for v, _ in pairs)
        elif last.startswith("min"):
            merged[name] = min(v for v, _ in pairs)
        else:
            merged[name] = sum(v * rows for v, rows in pairs) / sum(rows for _, rows in pairs)
    return merged


def _loss_mask(batch: dict) -> torch.Tensor:
    """Tokens that count in the loss: completion tokens, minus tool-output tokens in multi-turn rollouts."""
    mask = batch["completion_mask"]
    return mask * batch["tool_mask"] if "tool_mask" in batch else mask


def _reward_problem(values, expected: int) -> str | None:
    """What is wrong with a reward function's output, or `None`."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        return f"returned {type(values).__name__}, expected a list of {expected} numbers"
    if len(values) != expected:
        return f"returned {len(values)} values for {expected} completions"
    for row, value in enumerate(values):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalars
            value = value.item()
        if value is None:
            continue
        if not isinstance(value, numbers.Real):
            return f"returned {value!r} (a {type(value).__name__}) at row {row}, expected a number or None"
        if math.isinf(value):
            return f"returned {value} at row {row}; use None (or NaN) for a completion that cannot be scored"
    return None


def _ignore(*args, **kwargs) -> None:
    return None


def _failing_rows(func, prompts, completions, completion_ids, kwargs, limit: int = 10) -> list[int]:
    """Rows on which `func` raises when called one row at a time (the first `limit`)."""
    n, rows = len(prompts), []
    for i in range(n):
        one = {k: [v[i]] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
        # Diagnosis only: nothing it logs may reach the completions table or the metrics.
        one.update({k: _ignore for k in ("log_extra", "log_metric") if k in one})
        try:
            func(prompts=[prompts[i]], completions=[completions[i]], completion_ids=[completion_ids[i]], **one)
        except Exception:  # noqa: BLE001
            rows.append(i)
            if len(rows) == limit:
                break
    return rows
