"""DAPOTrainer.compute_loss: equal to TRL's own loss, and invariant to how the optimizer batch is split."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from dapo_trl import DAPOTrainer
from dapo_trl.core import LOSS_AGG_MODES
from tests.helpers import constant_reward, kind_dataset, make_config


def make_batch(model, batch_size=6, prompt_len=5, completion_len=7, seed=0, off_policy=0.3):
    """A hand-made batch: left-padded prompts, completions of different lengths, perturbed old log-probs."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prompt_ids = torch.randint(3, vocab, (batch_size, prompt_len), generator=generator)
    prompt_mask = torch.ones(batch_size, prompt_len, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(3, vocab, (batch_size, completion_len), generator=generator)
    lengths = torch.tensor([7, 3, 5, 1, 6, 2][:batch_size])
    completion_mask = (torch.arange(completion_len)[None] < lengths[:, None]).long()
    completion_mask[3] = 0  # a masked-out (truncated) completion
    advantages = torch.randn(batch_size, generator=generator, dtype=torch.float64)
    noise = off_policy * torch.randn(batch_size, completion_len, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        ids = torch.cat([prompt_ids, completion_ids], 1)
        logits = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, completion_mask], 1)).logits
        logps = torch.log_softmax(logits[:, prompt_len - 1 : -1].double(), -1)
        logps = logps.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    dtype = next(model.parameters()).dtype
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages.to(dtype),
        "old_per_token_logps": (logps + noise).to(dtype),
        "num_items_in_batch": completion_mask.sum(),
    }


def grads_of(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.fixture(scope="module")
def dapo_trainer(tiny_model_dir, tmp_path_factory):
    def build(dtype=torch.float32, **overrides):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
        args = make_config(tmp_path_factory.mktemp("loss"), **overrides)
        trainer = DAPOTrainer(model=model, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset(8))
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        return trainer

    return build


def test_loss_and_gradients_equal_trl_dapo_loss(dapo_trainer, tiny_model_dir, tmp_path):
    ours = dapo_trainer()
    model = ours.model
    grpo_args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    trl = GRPOTrainer(model=model, reward_funcs=constant_reward, args=grpo_args, train_dataset=kind_dataset(8))
    trl.model.train()
    trl.current_gradient_accumulation_steps = 1
    batch = make_batch(model)

    model.zero_grad()
    trl_loss = trl._compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = grads_of(model)

    model.zero_grad()
    our_loss = ours.compute_loss(model, {**batch, "num_seqs_in_batch": torch.tensor(5.0)})
    our_loss.backward()
    our_grads = grads_of(model)

    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(our_grads, trl_grads, rtol=1e-5, atol=1e-7)
    # The batch is off-policy, so clipping acts and both report the same clip fractions.
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean"):
        assert ours._metrics["train"][key][-1] == pytest.approx(trl._metrics["train"][key][-1], abs=1e-6)
    assert ours._metrics["train"]["clip_ratio/low_mean"][-1] + ours._metrics["train"]["clip_ratio/high_mean"][-1] > 0
    assert ours._metrics["train"]["entropy"][-1] == pytest.approx(trl._metrics["train"]["entropy"][-1], rel=1e-5)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
def test_gradient_invariant_to_accumulation_split(dapo_trainer, mode, clip_ratio_c):
    """One optimizer step's gradient is the same whole, or split into micro-batches (float64, 1e-6 relative)."""
    trainer = dapo_trainer(dtype=torch.float64, loss_agg_mode=mode, clip_ratio_c=clip_ratio_c)
    model = trainer.model
    batch = make_batch(model, off_policy=1.0)
    mask = batch["completion_mask"]
    window = {"num_items_in_batch": mask.sum().double(), "num_seqs_in_batch": (mask.sum(-1) > 0).sum().double()}

    model.zero_grad()
    whole = trainer.compute_loss(model, {**batch, **window})
    whole.backward()
    reference = grads_of(model).clone()

    for splits in ([2, 4], [1, 2, 3]):  # 2 and 3 micro-batches of unequal sizes
        model.zero_grad()
        total = 0.0
        bounds = [0, *splits, len(mask)]
        for start, end in zip(bounds, bounds[1:]):
            part = {key: value[start:end] if value.dim() else value for key, value in batch.items()}
            loss = trainer.compute_loss(model, {**part, **window})
            loss.backward()
            total = total + loss.detach()
        torch.testing.assert_close(total, whole.detach(), rtol=1e-6, atol=0)
        # Relative to the gradient's norm: the plain float64 forward is exact across batch shapes, but the fused
        # LM-head log-prob path TRL calls (fused_lm_head=True) rounds single elements differently per shape.
        assert (grads_of(model) - reference).norm() <= 1e-6 * reference.norm()


def test_dual_clip_metric_logged_only_when_on(dapo_trainer):
    trainer = dapo_trainer(clip_ratio_c=1.5)
    batch = make_batch(trainer.model, off_policy=2.0)
    trainer.compute_loss(trainer.model, {**batch, "num_seqs_in_batch": torch.tensor(5.0)})
    assert "clip_ratio/dual_mean" in trainer._metrics["train"]
    plain = dapo_trainer()
    plain.compute_loss(plain.model, {**batch, "num_seqs_in_batch": torch.tensor(5.0)})
    assert "clip_ratio/dual_mean" not in plain._metrics["train"]


def test_kl_term_with_bias_correction_equals_trl(tiny_model_dir, tmp_path):
    """beta > 0 (not DAPO's default): the k3 KL term, importance-weighted as in TRL's default, matches TRL."""
    common = dict(per_device_train_batch_size=8, num_generations=4, beta=0.04, use_cpu=True, bf16=False)
    ours = DAPOTrainer(
        model=tiny_model_dir,
        reward_funcs=constant_reward,
        args=make_config(tmp_path / "dapo", **common),
        train_dataset=kind_dataset(8),
    )
    trl = GRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=constant_reward,
        args=GRPOConfig(
            output_dir=str(tmp_path / "grpo"), loss_type="dapo", epsilon_high=0.28, report_to="none", **common
        ),
        train_dataset=kind_dataset(8),
    )
    assert trl.args.use_bias_correction_kl and ours.args.use_bias_correction_kl
    model = ours.model
    model.train()
    trl.model.train()
    ours.current_gradient_accumulation_steps = trl.current_gradient_accumulation_steps = 1
    batch = make_batch(model)
    generator = torch.Generator().manual_seed(1)
    batch["ref_per_token_logps"] = batch["old_per_token_logps"] + 0.2 * torch.randn(
        batch["old_per_token_logps"].shape, generator=generator
    )
    trl_loss = trl._compute_loss(model, batch)
    our_loss = ours.compute_loss(model, {**batch, "num_seqs_in_batch": torch.tensor(5.0)})
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-6, atol=1e-7)
    assert ours._metrics["train"]["kl"][-1] == pytest.approx(trl._metrics["train"]["kl"][-1], rel=1e-5)
