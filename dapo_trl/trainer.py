"""`DAPOTrainer`: TRL's `GRPOTrainer` with DAPO's loss and dynamic sampling. The only module that knows TRL internals."""

from __future__ import annotations

import copy
import functools
import math
import numbers
import os
import warnings

import torch
from accelerate.utils import gather, gather_object
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, is_async_callable

from . import core
from .config import DAPOConfig
from .model_card import DAPO_PAPER, complete_card
from .quiet import known_warnings_quiet
from .rewards import OVERLONG_REWARD_NAME, overlong_penalty_reward
from .sampling import GroupPool, PromptStream, RoundPlanner, RoundResult, ZeroVarianceHistory


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
_DEFERRABLE_KEYS = ("old_per_token_logps",)
_STATE_FILE = "dapo_state_rank{rank}.pt"


class RewardFunctionError(RuntimeError):
    """A reward function raised or returned something unusable; raised on every process, so none hangs."""


class DAPOTrainer(GRPOTrainer):
    r"""
    Trainer for DAPO (Decoupled Clip and Dynamic sAmpling Policy Optimization, Yu et al. 2025).

    A drop-in for [`~trl.GRPOTrainer`] (same arguments: model id or object, reward functions with weights,
    `peft_config`, eval dataset, callbacks, ...) that takes a [`DAPOConfig`] and changes two things:

    - **the loss** ([`compute_loss`]): asymmetric clip-higher surrogate ([`dapo_trl.core.policy_loss`]), optional
      dual-clip, and aggregation ([`dapo_trl.core.aggregate_loss`]) over every loss token of the optimizer step:
      all gradient-accumulation micro-batches and all processes, counted exactly per step;
    - **the generation step**: dynamic sampling drops groups whose filter values are all equal and refills the
      generation batch with more groups (decided on the gathered rewards, identically on every rank, then
      rebalanced so every rank holds the same number of rows); old log-probs are computed for kept groups only;
      the soft overlong punishment is added as the `overlong_penalty` reward; truncated completions are masked.

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
        if args.dynamic_sampling and args.dynamic_sampling_source == "new_prompts" and self.train_dataset is not None:
            if not hasattr(self.train_dataset, "__getitem__") or not hasattr(self.train_dataset, "__len__"):
                raise ValueError(
                    "DAPOConfig.dynamic_sampling_source='new_prompts' needs a map-style train_dataset (it draws "
                    "replacement prompts by index); use 'same_prompts' or dynamic_sampling=False for an "
                    "IterableDataset."
                )

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
        self._prompts_skipped = 0  # in the current generation batch
        self._defer_logps = self._defer_logps_used = False
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
        DAPO loss of one micro-batch, normalized so that the micro-batches of an optimizer step (over gradient
        accumulation and processes) add up to the loss of the whole step.
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
        loss_mat, clip_metrics = core.policy_loss(
            logps, old_logps, inputs["advantages"], mask, self.epsilon_low, self.epsilon_high, self.args.clip_ratio_c
        )
        if "importance_sampling_ratio" in inputs:  # vLLM sampler/trainer mismatch correction
            loss_mat = loss_mat * inputs["importance_sampling_ratio"]
        kl = None
        if self.beta != 0.0:
            kl = core.kl_penalty(logps, inputs["ref_per_token_logps"])
            if self.args.use_bias_correction_kl:  # as TRL: importance-weight the KL of off-policy samples
                kl = kl * torch.exp(torch.clamp(logps - old_logps, -core.MAX_LOG_RATIO, core.MAX_LOG_RATIO))
            loss_mat = loss_mat + self.beta * kl

        tokens, seqs = self._loss_normalizers(inputs, mask)
        processes = self.accelerator.num_processes
        loss = core.aggregate_loss(
            loss_mat,
            mask,
            self.args.loss_agg_mode,
            num_tokens=tokens / processes,
            num_seqs=seqs / processes,
            seq_len=self.max_completion_length / processes,
        )
        if aux_loss is not None:
            accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation

        self._log_loss_metrics(mode, loss_mat, entropies, clip_metrics, kl, mask)
        return loss

    def _loss_normalizers(self, inputs, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (tokens, sequences) of the loss: the optimizer step's in training, this batch's in eval."""
        if "num_seqs_in_batch" in inputs:
            return inputs["num_items_in_batch"], inputs["num_seqs_in_batch"]
        local = torch.stack([mask.sum(), (mask.sum(-1) > 0).sum()]).float()
        total = self.accelerator.reduce(local, reduction="sum")
        return total[0], total[1]

    def _log_loss_metrics(self, mode, loss_mat, entropies, clip_metrics, kl, mask):
        mask = mask.to(loss_mat.dtype)
        count = mask.sum()
        stats = [(loss_mat * mask).sum(), (entropies * mask).sum()]
        stats += [frac * count for frac in clip_metrics.values()]  # fractions back to counts for a global mean
        if kl is not None:
            stats.append((kl * mask).sum())
        stats = torch.stack([*stats, count]).detach().float()
        stats = self.accelerator.reduce(stats, reduction="sum")
        # No loss token anywhere (e.g. every completion truncated and masked): NaN, which TRL's `log` leaves out of
        # its averages, rather than a 0 that reads like a real value.
        stats = (stats[:-1] / stats[-1]).tolist()
        names = ["policy_loss", "entropy", *(f"{name}_mean" for name in clip_metrics)]
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
        # Every process reaches this point (failed rewards were replaced by None), so all can stop together.
        failed = torch.tensor([float(bool(self._reward_errors))], device=rewards_per_func.device)
        if self.accelerator.num_processes > 1:
            failed = gather(failed)
        if failed.any():
            errors = gather_object(self._reward_errors) if self.accelerator.num_processes > 1 else self._reward_errors
            raise RewardFunctionError("\n".join(errors))
        self._last_rewards_per_func = rewards_per_func  # gathered over processes: the filter's input
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
            # Inside a dynamic-sampling round: old log-probs are computed later, for the kept groups only.
            return input_ids.new_full((input_ids.size(0), logits_to_keep), math.nan, dtype=torch.float32), None, None
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )

    def _generate_and_score_completions(self, inputs):
        if not (self.model.training and self.args.dynamic_sampling):
            return super()._generate_and_score_completions(inputs)
        return self._dynamic_sampling(inputs)

    @property
    def _can_defer_logps(self) -> bool:
        # The vLLM correction needs old log-probs inside TRL's method; the reference path stays TRL's too.
        return self.beta == 0.0 and not (self.use_vllm and self.vllm_importance_sampling_correction)

    @property
    def _generate_every(self) -> int:
        """Micro-steps between two generations (TRL: one generation batch serves steps_per_generation * num_iterations)."""
        return self.args.steps_per_generation * self.num_iterations

    @property
    def _needs_old_logps(self) -> bool:
        # TRL's rule: old log-probs are needed unless every optimizer step starts with a fresh generation.
        return self.args.gradient_accumulation_steps % self._generate_every != 0

    def _new_prompt_stream(self) -> PromptStream:
        # Its own seed, and shuffled even with shuffle_dataset=False: replaying the main sampler's order would put the
        # same prompts twice in one generation batch.
        return PromptStream(len(self.train_dataset), self.args.seed + 1)

    def _stream_rows(self, n: int) -> list[dict]:
        """`n` fresh prompts, repeated `num_generations` times each (the layout of TRL's RepeatSampler)."""
        if self._prompt_stream is None:
            self._prompt_stream = self._new_prompt_stream()
        rows, draws = [], 0
        while len(rows) < n * self.num_generations:
            (index,) = self._prompt_stream.take(1)
            row = self.train_dataset[index]
            draws += 1
            # After a whole dataset of skips, every prompt is zero-variance: stop skipping rather than loop forever.
            if self._skip_history is not None and draws <= n + len(self.train_dataset):
                if self._skip_history.skip(row["prompt"]):
                    self._prompts_skipped += 1
                    continue
            rows.extend(copy.copy(row) for _ in range(self.num_generations))
        return rows

    def _skip_known_zero_variance(self, rows: list[dict]) -> list[dict]:
        """Replace the dataloader's prompts that the history says are zero-variance (GRESO) by stream prompts."""
        group = self.num_generations
        groups = [rows[i : i + group] for i in range(0, len(rows), group)]
        kept = [g for g in groups if not self._skip_history.skip(g[0]["prompt"])]
        skipped = len(groups) - len(kept)
        self._prompts_skipped += skipped
        return [row for g in kept for row in g] + (self._stream_rows(skipped) if skipped else [])

    def _dynamic_sampling(self, inputs: list[dict]) -> dict:
        args, group = self.args, self.num_generations
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        target = self._target_groups
        rows = gather_object(list(inputs)) if processes > 1 else list(inputs)  # global rows, groups contiguous
        self._prompts_skipped = 0
        if self._skip_history is not None:
            rows = self._skip_known_zero_variance(rows)
        if args.dynamic_sampling_source == "new_prompts":
            extra = self._planner.first_round_extra()
            if extra:
                rows += self._stream_rows(extra)

        pool = GroupPool(group)
        cap_hit = False
        while True:
            keep = pool.add(self._run_round(rows))
            self._planner.observe(len(keep), int(keep.sum()))
            if self._skip_history is not None:
                self._skip_history.record([row["prompt"] for row in rows[::group]], (~keep).tolist())
            if len(pool.kept) >= target:
                break
            if 0 < args.max_num_gen_batches <= len(pool.rounds):
                cap_hit = True
                break
            missing = target - len(pool.kept)
            if args.dynamic_sampling_source == "new_prompts":
                rows = self._stream_rows(self._planner.next_round(missing))
            else:  # the dropped prompts of the last round, again (repeated to split evenly over processes)
                dropped = [rows[g * group] for g, k in enumerate(keep.tolist()) if not k]
                n = -(-len(dropped) // self._round_multiple) * self._round_multiple
                rows = [copy.copy(dropped[i % len(dropped)]) for i in range(n) for _ in range(group)]

        if cap_hit:
            message = (
                f"Dynamic sampling hit max_num_gen_batches={args.max_num_gen_batches} with {len(pool.kept)}/{target} "
                f"groups carrying signal ({pool.generated} generated)."
            )
            if args.dynamic_sampling_at_cap == "raise":
                raise RuntimeError(
                    message + " Raise max_num_gen_batches, or set dynamic_sampling_at_cap='fill' to train on what "
                    "was kept."
                )
            warnings.warn(
                message + " Training on the kept groups; filler rows are masked out of the loss.", stacklevel=2
            )

        pad_id = self._tokenizer.pad_token_id
        pad_values = {
            "prompt_ids": (pad_id, True),
            "prompt_mask": (0, True),
            "completion_ids": (pad_id, False),
            "tool_mask": (1, False),
        }
        batch, _, info = pool.assemble(target, pad_values)
        per_rank = args.generation_batch_size // processes
        local = {key: value[rank * per_rank : (rank + 1) * per_rank] for key, value in batch.items()}
        local = self._trim_padding(local)
        if self._defer_logps_used and self._needs_old_logps:
            local["old_per_token_logps"] = self._old_logps(local)
        local["num_items_in_batch"] = self.accelerator.gather(_loss_mask(local).sum()).sum()

        # Prompts drawn from the dataset for this batch: the dataloader's, the stream's, and the skipped ones.
        new_rounds = pool.rounds if args.dynamic_sampling_source == "new_prompts" else pool.rounds[:1]
        prompts_consumed = sum(len(result.rows) for result in new_rounds) // group + self._prompts_skipped
        self._prompts_total += prompts_consumed
        kept_rewards = (
            torch.cat([pool.rounds[r].rewards.view(-1, group)[g] for r, g in pool.kept[:target]])
            if info["kept"]
            else None
        )
        all_rewards = torch.cat([result.rewards for result in pool.rounds])
        metrics = {
            "rounds": len(pool.rounds),
            "groups_generated": pool.generated,
            "groups_kept": info["kept"],
            "groups_surplus": info["surplus"],
            "groups_filler": info["filler"],
            "cap_hit": float(cap_hit),
            "keep_rate": len(pool.kept) / pool.generated,
            "prompts_consumed": prompts_consumed,
            "prompts_consumed_total": self._prompts_total,
            "prompts_skipped": self._prompts_skipped,
            "dropped_all_max_frac": pool.at_max / pool.generated,
            "dropped_all_min_frac": pool.at_min / pool.generated,
            "reward_before": torch.nanmean(all_rewards).item(),
            "reward_after": torch.nanmean(kept_rewards).item() if kept_rewards is not None else math.nan,
        }
        for name, value in metrics.items():
            self._metrics["train"][f"dynamic_sampling/{name}"].append(float(value))
        return local

    def _run_round(self, rows: list[dict]) -> RoundResult:
        """Generate and score `rows` (global, split evenly over processes); return the gathered round."""
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        per_rank = len(rows) // processes
        local_rows = rows[rank * per_rank : (rank + 1) * per_rank]
        self._defer_logps = self._defer_logps_used = self._can_defer_logps
        try:
            output = super()._generate_and_score_completions(local_rows)
        finally:
            self._defer_logps = False
        rewards_per_func = self._last_rewards_per_func
        unsupported = [key for key in _MODEL_INPUT_KEYS if key in output]
        if unsupported:
            raise NotImplementedError(
                f"Dynamic sampling does not support multimodal batches yet (found {unsupported}); set "
                "DAPOConfig.dynamic_sampling=False."
            )
        batch = {}
        pad_id = self._tokenizer.pad_token_id
        for key, value in output.items():
            if key == "num_items_in_batch" or (self._defer_logps_used and key in _DEFERRABLE_KEYS):
                continue
            if value.dim() >= 2 and processes > 1:
                left = key.startswith("prompt_")
                pad = pad_id if key.endswith("_ids") else (1 if key == "tool_mask" else 0)
                value = self.accelerator.pad_across_processes(value, dim=1, pad_index=pad, pad_first=left)
            batch[key] = gather(value) if processes > 1 else value

        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        values = (rewards_per_func * self._filter_weights.to(rewards_per_func.device)).nansum(dim=1)
        # A row whose filter rewards are all None/NaN is unscorable: NaN, so it cannot make a group look informative.
        used = self._filter_weights.to(rewards_per_func.device) != 0
        values[torch.isnan(rewards_per_func[:, used]).all(dim=1)] = math.nan
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = math.nan
        return RoundResult(batch=batch, values=values.cpu(), rewards=rewards.cpu(), rows=rows)

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

    @torch.no_grad()
    def _old_logps(self, batch: dict) -> torch.Tensor:
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                input_ids,
                attention_mask,
                batch["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size,
            )
        return logps

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
