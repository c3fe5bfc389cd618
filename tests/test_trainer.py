"""DAPOTrainer end to end on the tiny model (single process): loss, dynamic sampling, overlong shaping, drop-in use."""

import math

import pytest
import torch
from peft import LoraConfig
from trl import GRPOConfig

from dapo_trl import DAPOTrainer
from tests.helpers import constant_reward, kind_dataset, kind_reward, logged, make_config


class RecordingTrainer(DAPOTrainer):
    """Keeps what dynamic sampling hands to the loss (groups still contiguous) and what each micro-batch sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.micro_batches = [], []

    def _dynamic_sampling(self, inputs):
        local = super()._dynamic_sampling(inputs)
        self.batches.append({key: value.clone() for key, value in local.items()})
        return local

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.model.training:
            self.micro_batches.append(
                (inputs["completion_mask"].sum().item(), float(inputs["num_items_in_batch"]), self._step)
            )
        return super().compute_loss(model, inputs, *args, **kwargs)


def test_train_end_to_end_weights_move_and_metrics_logged(tiny_model_dir, tmp_path):
    args = make_config(tmp_path, max_steps=3, num_iterations=2, learning_rate=5e-3)
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved, "no weight changed"
    losses = logged(trainer, "loss")
    assert losses and all(math.isfinite(x) for x in losses)
    for key in ("policy_loss", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "dynamic_sampling/rounds"):
        assert logged(trainer, key), key
    assert not logged(trainer, "clip_ratio/dual_mean")  # dual-clip is off


def test_clip_higher_acts_off_policy(tiny_model_dir, tmp_path):
    """With several updates per generation batch the ratio moves away from 1 and the clip bounds bind."""
    args = make_config(tmp_path, max_steps=6, num_iterations=3, learning_rate=3e-2, clip_ratio_c=1.5)
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    trainer.train()
    clipped = [
        low + high
        for low, high in zip(logged(trainer, "clip_ratio/low_mean"), logged(trainer, "clip_ratio/high_mean"))
    ]
    assert max(clipped) > 0
    assert logged(trainer, "clip_ratio/dual_mean")


def test_dynamic_sampling_trains_only_on_groups_with_signal(tiny_model_dir, tmp_path):
    # kind 0 (always 1) and kind 1 (always 0) groups are degenerate: half the prompts.
    args = make_config(tmp_path, max_steps=4, steps_per_generation=2)
    trainer = RecordingTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    trainer.train()
    assert len(trainer.batches) == 2  # 4 steps, 2 steps per generation
    for batch in trainer.batches:
        assert batch["completion_ids"].size(0) == args.generation_batch_size  # the configured size, every time
        groups = batch["advantages"].view(-1, args.num_generations)
        # kind_reward alternates 0/1 inside informative groups: advantages are +-0.87 (std of [0,1,0,1] is 0.577)
        assert (groups.abs() > 0.5).all(), groups
        # every kept group carries gradient: a row that reaches the loss with a nonzero advantage
        reaches = (batch["completion_mask"].sum(1) > 0).view(-1, args.num_generations)
        assert ((groups.abs() > 0.5) & reaches).any(dim=1).all()
        loss_tokens = batch["completion_mask"].sum()
        assert batch["num_items_in_batch"] == loss_tokens

    generated, kept = (
        logged(trainer, "dynamic_sampling/groups_generated"),
        logged(trainer, "dynamic_sampling/groups_kept"),
    )
    surplus = logged(trainer, "dynamic_sampling/groups_surplus")
    keep_rate = logged(trainer, "dynamic_sampling/keep_rate")
    at_max = logged(trainer, "dynamic_sampling/dropped_all_max_frac")
    at_min = logged(trainer, "dynamic_sampling/dropped_all_min_frac")
    no_gradient = logged(trainer, "dynamic_sampling/groups_no_gradient")
    target = args.generation_batch_size // args.num_generations
    for g, k, s, rate, hi, lo, ng in zip(generated, kept, surplus, keep_rate, at_max, at_min, no_gradient):
        assert k == target and not logged(trainer, "dynamic_sampling/cap_hit")[0]
        assert rate * g == pytest.approx(k + s)  # every kept group is either trained on or surplus
        # the dropped groups: all-1 (max), all-0 (min), and informative ones whose varying rows were all truncated
        # (masked out of the loss, max_completion_length=8): those carry no gradient and are counted apart
        assert hi * g + lo * g + ng == pytest.approx(g - k - s)
        assert hi > 0 and lo > 0
    assert logged(trainer, "dynamic_sampling/reward_after")[0] == pytest.approx(0.5)
    assert logged(trainer, "dynamic_sampling/prompts_consumed_total")[-1] == sum(generated)


def test_exact_token_count_per_optimizer_step(tiny_model_dir, tmp_path):
    """steps_per_generation=4, accumulation 2: each optimizer step is normalized by its own token count."""
    args = make_config(
        tmp_path, max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=4
    )
    trainer = RecordingTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    trainer.train()
    micro = trainer.micro_batches
    assert len(micro) == 4
    for window in (micro[0:2], micro[2:4]):
        assert window[0][1] == window[1][1] == sum(tokens for tokens, _, _ in window)


def test_cap_fill_trains_on_kept_and_masks_filler(tiny_model_dir, tmp_path):
    args = make_config(tmp_path, max_steps=1, max_num_gen_batches=2)
    trainer = RecordingTrainer(
        model=tiny_model_dir, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset()
    )
    with pytest.warns(UserWarning, match="max_num_gen_batches=2"):
        trainer.train()
    batch = trainer.batches[0]
    assert batch["completion_ids"].size(0) == args.generation_batch_size  # shapes held
    assert batch["completion_mask"].sum() == 0 and batch["num_items_in_batch"] == 0  # filler adds no tokens
    assert logged(trainer, "dynamic_sampling/cap_hit") == [1.0]
    assert logged(trainer, "dynamic_sampling/rounds") == [2.0]
    assert logged(trainer, "dynamic_sampling/groups_filler") == [2.0]
    assert all(math.isfinite(x) for x in logged(trainer, "loss"))


def test_cap_raise(tiny_model_dir, tmp_path):
    args = make_config(tmp_path, max_steps=1, max_num_gen_batches=2, dynamic_sampling_at_cap="raise")
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset())
    with pytest.raises(RuntimeError, match="max_num_gen_batches=2"):
        trainer.train()


def test_same_prompts_source_resamples_dropped_prompts(tiny_model_dir, tmp_path):
    # truncated rows stay in the loss, so an informative group always carries gradient (no truncation luck)
    args = make_config(
        tmp_path,
        max_steps=1,
        dynamic_sampling_source="same_prompts",
        max_num_gen_batches=3,
        mask_truncated_completions=False,
    )
    trainer = RecordingTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    with pytest.warns(UserWarning, match="max_num_gen_batches"):  # kinds 0 and 1 never resolve
        trainer.train()
    assert logged(trainer, "dynamic_sampling/prompts_consumed") == [2.0]  # no new prompt was drawn
    assert logged(trainer, "dynamic_sampling/rounds") == [3.0]
    assert logged(trainer, "dynamic_sampling/groups_kept") == [1.0]


def test_overlong_penalty_is_a_logged_reward_but_not_the_filter(tiny_model_dir, tmp_path):
    """A constant task reward plus a length penalty: groups differ only by length, so all are dropped."""
    args = make_config(tmp_path, max_steps=1, overlong_buffer_length=4, max_num_gen_batches=2, reward_weights=[2.0])
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset())
    assert trainer.reward_func_names == ["constant_reward", "overlong_penalty"]
    assert trainer.reward_weights.tolist() == [2.0, 1.0]
    assert args.reward_weights == [2.0]  # the caller's config is untouched
    with pytest.warns(UserWarning, match="max_num_gen_batches"):
        trainer.train()
    assert logged(trainer, "dynamic_sampling/groups_kept") == [0.0]
    penalty = logged(trainer, "rewards/overlong_penalty/mean")
    assert penalty and -1.0 <= penalty[0] < 0  # truncated 8-token completions are penalized


def test_dynamic_sampling_metric_selects_one_reward(tiny_model_dir, tmp_path):
    args = make_config(tmp_path, max_steps=1, dynamic_sampling_metric="kind_reward")
    trainer = DAPOTrainer(
        model=tiny_model_dir, reward_funcs=[kind_reward, constant_reward], args=args, train_dataset=kind_dataset()
    )
    trainer.train()
    assert logged(trainer, "dynamic_sampling/groups_kept") == [2.0]


def test_unknown_metric_lists_valid_names(tiny_model_dir, tmp_path):
    args = make_config(tmp_path, dynamic_sampling_metric="accuracy")
    with pytest.raises(ValueError, match=r"dynamic_sampling_metric='accuracy'.*\['kind_reward'\]"):
        DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())


def test_grpo_config_is_rejected_with_a_clear_message(tiny_model_dir, tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(TypeError, match="DAPOConfig"):
        DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())


def test_none_reward_rows_do_not_make_a_group_informative(tiny_model_dir, tmp_path):
    def flaky(completions, kind, **kwargs):
        # kind 0: one None in an otherwise constant group; kind 1: all None; others: informative
        return [
            None if (k == 1 or (k == 0 and i % 4 == 0)) else 1.0 if k == 0 else float(i % 2)
            for i, k in enumerate(kind)
        ]

    args = make_config(tmp_path, max_steps=1)
    trainer = RecordingTrainer(model=tiny_model_dir, reward_funcs=flaky, args=args, train_dataset=kind_dataset())
    trainer.train()
    groups = trainer.batches[0]["advantages"].view(-1, args.num_generations)
    assert (groups.abs() > 0.5).all()  # only the informative kinds reached the loss


def test_peft_conversational_eval_and_weighted_rewards(tiny_model_dir, tmp_path):
    """The drop-in surface: LoRA, chat prompts, an eval set (not filtered), two weighted reward functions."""
    args = make_config(
        tmp_path,
        max_steps=2,
        reward_weights=[1.0, 0.5],
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=8,
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DAPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[kind_reward, constant_reward],
        args=args,
        train_dataset=kind_dataset(conversational=True),
        eval_dataset=kind_dataset(16, conversational=True),
        peft_config=peft_config,
    )
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert adapters and all("lora" in n for n in adapters)
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())
    assert any(not torch.equal(params[n], p) for n, p in adapters.items())
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert evals and not any(key.startswith("eval_dynamic_sampling") for key in evals[0])


def test_zero_variance_history_skips_degenerate_prompts(tiny_model_dir, tmp_path):
    """GRESO-style skipping: once seen, always-degenerate prompts (kinds 0 and 1) stop being generated for."""
    dataset = kind_dataset(8)  # 8 prompts: 4 degenerate, 4 informative; many epochs in a few steps
    args = make_config(
        tmp_path,
        max_steps=6,
        dynamic_sampling_skip_zero_variance=True,
        dynamic_sampling_skip_explore=0.0,
        per_device_train_batch_size=8,
        mask_truncated_completions=False,  # informative groups always carry gradient: one round in the first batch
    )
    trainer = RecordingTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=dataset)
    trainer.train()
    skipped = logged(trainer, "dynamic_sampling/prompts_skipped")
    keep_rate = logged(trainer, "dynamic_sampling/keep_rate")
    assert skipped[0] == 0 and sum(skipped[2:]) > 0  # nothing is known at first
    assert keep_rate[-1] == 1.0  # after the first epochs, only informative prompts are generated for
    consumed = logged(trainer, "dynamic_sampling/prompts_consumed")
    generated = logged(trainer, "dynamic_sampling/groups_generated")
    assert consumed[-1] == generated[-1] + skipped[-1]  # every drawn prompt was either generated for or skipped


def test_prompt_stream_is_shuffled_even_without_dataset_shuffling(tiny_model_dir, tmp_path):
    args = make_config(tmp_path, shuffle_dataset=False)
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset())
    order = trainer._new_prompt_stream().take(16)
    assert sorted(order) != order  # the dataloader walks 0, 1, 2, ... here: the stream must not replay it


def test_user_reward_named_overlong_penalty_is_refused(tiny_model_dir, tmp_path):
    def overlong_penalty(completions, **kwargs):
        return [0.0] * len(completions)

    args = make_config(tmp_path, overlong_buffer_length=4)
    with pytest.raises(ValueError, match="named 'overlong_penalty'"):
        DAPOTrainer(model=tiny_model_dir, reward_funcs=overlong_penalty, args=args, train_dataset=kind_dataset())


def test_streaming_dataset_draws_replacements_from_its_own_stream(tiny_model_dir, tmp_path):
    """An IterableDataset (no __getitem__): replacement prompts come from a stream over the dataset itself, and no
    prompt is trained twice in one generation batch (64 prompts: large enough)."""
    args = make_config(tmp_path, max_steps=3, mask_truncated_completions=False)
    dataset = kind_dataset().to_iterable_dataset()
    trainer = DAPOTrainer(model=tiny_model_dir, reward_funcs=kind_reward, args=args, train_dataset=dataset)
    trainer.train()
    assert max(logged(trainer, "dynamic_sampling/rounds")) > 1  # kinds 0 and 1 are dropped: replacements drawn
    assert logged(trainer, "dynamic_sampling/groups_kept") == [2.0] * 3
    prompts = list(trainer._logs["prompt"])  # the last generation batch's trained rows
    groups = [prompts[i : i + args.num_generations] for i in range(0, len(prompts), args.num_generations)]
    assert all(len(set(g)) == 1 for g in groups)
    assert len({g[0] for g in groups}) == len(groups)  # no prompt twice
