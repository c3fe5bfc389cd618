"""DAPOTrainer.compute_loss: equal to TRL's own loss, and invariant to how the optimizer batch is split."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from dapo_trl import DAPOTrainer
from dapo_trl.core import LOSS_AGG_MODES, LOSS_TYPES
from tests.helpers import constant_reward, kind_dataset, logged, make_config


def make_batch(model, batch_size=6, prompt_len=5, completion_len=7, seed=0, off_policy=0.3, empty_row=True):
    """A hand-made batch: left-padded prompts, completions of different lengths, perturbed old log-probs; with
    `empty_row`, row 3 has no loss token (a masked truncated completion)."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prompt_ids = torch.randint(3, vocab, (batch_size, prompt_len), generator=generator)
    prompt_mask = torch.ones(batch_size, prompt_len, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(3, vocab, (batch_size, completion_len), generator=generator)
    lengths = torch.tensor([7, 3, 5, 1, 6, 2][:batch_size])
    completion_mask = (torch.arange(completion_len)[None] < lengths[:, None]).long()
    if empty_row:
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


def step_window(mask: torch.Tensor) -> dict:
    """The optimizer step's counts the trainer passes with each micro-batch: tokens, sequences and rows."""
    return {
        "num_items_in_batch": mask.sum().double(),
        "num_seqs_in_batch": (mask.sum(-1) > 0).sum().double(),
        "num_rows_in_batch": float(len(mask)),
    }


def split_loss(trainer, batch: dict, window: dict, bounds: list[int]) -> torch.Tensor:
    """The summed loss of `batch` split into micro-batches at `bounds`, gradients accumulated in the model."""
    trainer.model.zero_grad()
    total = 0.0
    for start, end in zip(bounds, bounds[1:]):
        part = {key: value[start:end] if value.dim() else value for key, value in batch.items()}
        loss = trainer.compute_loss(trainer.model, {**part, **window})
        loss.backward()
        total = total + loss.detach()
    return total


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
def test_gradient_invariant_to_accumulation_split(dapo_trainer, mode, clip_ratio_c):
    """One optimizer step's gradient is the same whole, or split into micro-batches (float64, 1e-6 relative)."""
    trainer = dapo_trainer(dtype=torch.float64, loss_agg_mode=mode, clip_ratio_c=clip_ratio_c)
    model = trainer.model
    batch = make_batch(model, off_policy=1.0)
    mask = batch["completion_mask"]
    window = step_window(mask)

    model.zero_grad()
    whole = trainer.compute_loss(model, {**batch, **window})
    whole.backward()
    reference = grads_of(model).clone()

    for splits in ([2, 4], [1, 2, 3]):  # 2 and 3 micro-batches of unequal sizes
        total = split_loss(trainer, batch, window, [0, *splits, len(mask)])
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


@pytest.mark.parametrize(
    "bias_correction,level",
    [(True, "token"), (False, "token"), (True, "sequence")],
    ids=["token", "plain", "sequence"],
)
def test_kl_term_with_bias_correction_equals_trl(tiny_model_dir, tmp_path, bias_correction, level):
    """beta > 0 (not DAPO's default): the k3 KL term, importance-weighted as in TRL's default (per token or per
    sequence, with importance_sampling_level) or not, matches TRL."""
    common = dict(
        per_device_train_batch_size=8,
        num_generations=4,
        beta=0.04,
        use_cpu=True,
        bf16=False,
        use_bias_correction_kl=bias_correction,
        importance_sampling_level=level,
    )
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
    assert trl.args.use_bias_correction_kl == ours.args.use_bias_correction_kl == bias_correction
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


# ---------------------------------------------------------------------------------------------------------------------
# Every TRL loss option, against TRL's own `_compute_loss` on the same batch
# ---------------------------------------------------------------------------------------------------------------------

# Options shared by both configs; DAPO's epsilon_high is passed to TRL explicitly (its default is epsilon's).
COMMON = dict(per_device_train_batch_size=8, num_generations=4, max_completion_length=8, use_cpu=True, bf16=False)

TRL_CASES = [
    {"loss_type": "dapo"},
    {"loss_type": "grpo"},
    {"loss_type": "bnpo"},
    {"loss_type": "dr_grpo"},
    {"loss_type": "luspo", "importance_sampling_level": "sequence"},
    {"loss_type": "luspo"},
    {"loss_type": "cispo", "epsilon_high": 1.2},
    {"loss_type": "sapo"},
    {"loss_type": "sapo", "sapo_temperature_pos": 2.0, "sapo_temperature_neg": 3.0},
    {"loss_type": "vespo"},
    {"loss_type": "vespo", "vespo_k_pos": 1.0, "vespo_lambda_pos": 1.5, "vespo_k_neg": 4.0, "vespo_lambda_neg": 3.0},
    {"loss_type": "grpo", "importance_sampling_level": "sequence"},  # GSPO
    {"loss_type": "dapo", "importance_sampling_level": "sequence"},
    {"loss_type": "grpo", "epsilon_high": 0.28, "delta": 1.3},  # two-sided clipping with clip-higher
    {"loss_type": "dapo", "delta": 1.3},
    {"loss_type": "dapo", "top_entropy_quantile": 0.5},
    {"loss_type": "grpo", "top_entropy_quantile": 0.2, "delta": 1.3},
    {"loss_type": "dapo", "off_policy_mask_threshold": -1.0},  # every negative-advantage row dropped
    {"loss_type": "sapo", "off_policy_mask_threshold": -0.05, "importance_sampling_level": "sequence"},
    {"loss_type": "dapo", "entropy_coef": 0.05},
    {"loss_type": "grpo", "entropy_coef": 0.05, "top_entropy_quantile": 0.3},
    {"loss_type": "dr_grpo", "use_adaptive_entropy": True, "entropy_coef": 0.05, "entropy_target": 10.0},
    {"loss_type": "dapo", "use_adaptive_entropy": True, "entropy_coef": 0.05, "entropy_target": 0.01},
    {"loss_type": "cispo", "epsilon_high": 1.2, "off_policy_mask_threshold": 0.0, "entropy_coef": 0.02},
]
# vLLM's importance-sampling correction (and its sampler log-probs for the off-policy mask): TRL applies it only
# with use_vllm, switched on by hand on TRL's trainer (no vLLM here); DAPOTrainer applies it when the batch has it.
VLLM_CASES = [
    {"loss_type": "dapo"},
    {"loss_type": "vespo"},
    {"loss_type": "grpo", "off_policy_mask_threshold": 0.0},
]
COMPARED_METRICS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "cispo_clip_ratio", "entropy", "entropy_coef")


def case_id(case):
    return ",".join(f"{k}={v}" for k, v in case.items())


def build_pair(tiny_model_dir, tmp_path, options, model=None):
    model = model if model is not None else AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ours = DAPOTrainer(
        model=model,
        reward_funcs=constant_reward,
        args=make_config(tmp_path / "dapo", **{**COMMON, **options}),
        train_dataset=kind_dataset(8),
    )
    trl_options = {"epsilon_high": 0.28, **options}
    trl_args = GRPOConfig(output_dir=str(tmp_path / "grpo"), report_to="none", **COMMON, **trl_options)
    trl = GRPOTrainer(model=model, reward_funcs=constant_reward, args=trl_args, train_dataset=kind_dataset(8))
    for trainer in (ours, trl):
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        if trainer.use_adaptive_entropy:
            trainer._last_world_entropy = 0.0  # as after a step below the target: the bonus applies
    return ours, trl


def run_both(ours, trl, batch):
    model = ours.model
    model.zero_grad()
    trl_loss = trl._compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = grads_of(model)
    model.zero_grad()
    mask = batch["completion_mask"]
    window = {"num_seqs_in_batch": (mask.sum(-1) > 0).sum().float()}
    our_loss = ours.compute_loss(model, {**batch, **window})
    our_loss.backward()
    return (our_loss, grads_of(model)), (trl_loss, trl_grads)


def assert_same_as_trl(ours, trl, batch):
    (our_loss, our_grads), (trl_loss, trl_grads) = run_both(ours, trl, batch)
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(our_grads, trl_grads, rtol=1e-5, atol=1e-7)
    sequence = ours.args.importance_sampling_level == "sequence"  # TRL then averages clip metrics per sequence
    for key in COMPARED_METRICS:
        if key in trl._metrics["train"] and not (sequence and key.startswith("clip_ratio")):
            assert ours._metrics["train"][key][-1] == pytest.approx(trl._metrics["train"][key][-1], rel=1e-5), key
    assert ours.entropy_coef == pytest.approx(trl.entropy_coef)  # the adaptive controller moved alike
    return our_loss, our_grads


@pytest.fixture(scope="module")
def plain_result(tiny_model_dir, tmp_path_factory):
    """TRL's default loss (dapo, clip-higher) on the comparison batch: every option must move away from it."""
    ours, trl = build_pair(tiny_model_dir, tmp_path_factory.mktemp("plain"), {})
    batch = make_batch(ours.model, off_policy=0.5, empty_row=False)
    (loss, grads), _ = run_both(ours, trl, batch)
    return loss.detach(), grads.clone()


@pytest.mark.parametrize("case", TRL_CASES, ids=case_id)
def test_every_trl_loss_option_equals_trl(tiny_model_dir, tmp_path, plain_result, case):
    """Loss (1e-5 relative), gradients and metrics equal TRL's for every loss_type and option, alone and combined.

    The batch has no empty row (TRL counts such rows in its per-sequence means, see the test below). Each case must
    also change the gradient of the plain dapo loss: an option DAPOTrainer ignored would then fail the comparison.
    """
    ours, trl = build_pair(tiny_model_dir, tmp_path, case)
    batch = make_batch(ours.model, off_policy=0.5, empty_row=False)
    loss, grads = assert_same_as_trl(ours, trl, batch)
    if case not in ({"loss_type": "dapo"}, {"loss_type": "bnpo"}):  # bnpo is dapo on one micro-batch and process
        plain_loss, plain_grads = plain_result
        assert (grads - plain_grads).norm() > 1e-3 * plain_grads.norm(), "the option did not change the gradient"


@pytest.mark.parametrize("case", VLLM_CASES, ids=case_id)
def test_vllm_importance_sampling_correction_equals_trl(tiny_model_dir, tmp_path, case):
    ours, trl = build_pair(tiny_model_dir, tmp_path, case)
    trl.use_vllm = trl.vllm_importance_sampling_correction = True
    batch = make_batch(ours.model, off_policy=0.5, empty_row=False)
    generator = torch.Generator().manual_seed(3)
    shape = batch["completion_mask"].shape
    batch["importance_sampling_ratio"] = 0.5 + torch.rand(shape, generator=generator)
    batch["sampling_per_token_logps"] = batch["old_per_token_logps"] + 0.3 * torch.randn(shape, generator=generator)
    assert_same_as_trl(ours, trl, batch)


@pytest.mark.parametrize("loss_type", ["grpo", "luspo", "sapo"])
def test_per_sequence_means_leave_out_empty_rows(tiny_model_dir, tmp_path, loss_type):
    """Documented difference: a row without loss tokens (masked truncated completion, dynamic-sampling filler) is not
    a sequence for DAPOTrainer's per-sequence means, while TRL's `.mean()` counts it: 5 sequences here, not 6."""
    ours, trl = build_pair(tiny_model_dir, tmp_path, {"loss_type": loss_type})
    batch = make_batch(ours.model, off_policy=0.5)  # row 3 is empty
    (our_loss, _), (trl_loss, _) = run_both(ours, trl, batch)
    torch.testing.assert_close(our_loss, trl_loss * 6 / 5, rtol=1e-5, atol=1e-7)


def test_dr_grpo_counts_every_row_as_trl(tiny_model_dir, tmp_path):
    """Dr. GRPO's normalizer is a constant, rows x max_completion_length, empty rows included, as in TRL."""
    ours, trl = build_pair(tiny_model_dir, tmp_path, {"loss_type": "dr_grpo"})
    assert_same_as_trl(ours, trl, make_batch(ours.model, off_policy=0.5))


INVARIANT_CASES = [{"loss_type": loss_type} for loss_type in LOSS_TYPES if loss_type not in ("cispo",)] + [
    {"loss_type": "cispo", "epsilon_high": 1.5},
    {"loss_type": "grpo", "importance_sampling_level": "sequence", "delta": 1.5, "clip_ratio_c": 3.0},
    {"loss_type": "dapo", "off_policy_mask_threshold": 0.0, "entropy_coef": 0.05},
    {"loss_type": "sapo", "loss_agg_mode": "token-mean", "entropy_coef": 0.05},
]


@pytest.mark.parametrize("case", INVARIANT_CASES, ids=case_id)
def test_every_loss_type_invariant_to_accumulation_split(dapo_trainer, case):
    """Exact per-step counting for every aggregation (and the entropy bonus): whole batch == split (float64)."""
    trainer = dapo_trainer(dtype=torch.float64, **case)
    model = trainer.model
    batch = make_batch(model, off_policy=1.0)
    mask = batch["completion_mask"]
    window = step_window(mask)
    model.zero_grad()
    whole = trainer.compute_loss(model, {**batch, **window})
    whole.backward()
    reference = grads_of(model).clone()
    total = split_loss(trainer, batch, window, [0, 2, 6])
    torch.testing.assert_close(total, whole.detach(), rtol=1e-6, atol=0)
    assert (grads_of(model) - reference).norm() <= 1e-6 * reference.norm()


def test_explicit_loss_agg_mode_overrides_loss_types_aggregation(dapo_trainer):
    """sapo aggregates per sequence by default; loss_agg_mode='token-mean' makes it a token mean."""
    batch = make_batch(dapo_trainer().model, off_policy=0.5, empty_row=False)
    window = {"num_seqs_in_batch": torch.tensor(6.0)}
    values = {}
    for mode in ("seq-mean-token-mean", "token-mean"):
        trainer = dapo_trainer(loss_type="sapo", loss_agg_mode=mode)
        values[mode] = trainer.compute_loss(trainer.model, {**batch, **window}).item()
    assert values["seq-mean-token-mean"] != pytest.approx(values["token-mean"], rel=1e-3)


def test_dual_clip_combines_with_other_clip_loss_types(dapo_trainer):
    """clip_ratio_c (DAPO-only) acts with grpo and GSPO too: it changes the loss and is logged."""
    batch = make_batch(dapo_trainer().model, off_policy=2.0, empty_row=False)
    window = {"num_seqs_in_batch": torch.tensor(6.0)}
    for extra in ({}, {"importance_sampling_level": "sequence"}):
        plain = dapo_trainer(loss_type="grpo", **extra)
        dual = dapo_trainer(loss_type="grpo", clip_ratio_c=1.5, **extra)
        plain_loss = plain.compute_loss(plain.model, {**batch, **window})
        dual_loss = dual.compute_loss(dual.model, {**batch, **window})
        assert dual._metrics["train"]["clip_ratio/dual_mean"][-1] > 0
        assert dual_loss.item() < plain_loss.item()  # the dual clip only lowers negative-advantage losses


# ---------------------------------------------------------------------------------------------------------------------
# Mixture-of-Experts: the router load-balancing loss
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory):
    from dapo_trl.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-moe"), moe=True)


def test_moe_aux_loss_in_gradient_and_logged_as_trl(tiny_moe_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_moe_dir)
    ours, trl = build_pair(tiny_moe_dir, tmp_path, {}, model=model)
    assert ours.aux_loss_enabled and ours.router_aux_loss_coef == 0.01
    batch = make_batch(model, off_policy=0.5)
    (our_loss, our_grads), (trl_loss, trl_grads) = run_both(ours, trl, batch)
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(our_grads, trl_grads, rtol=1e-5, atol=1e-7)
    assert ours._metrics["train"]["aux_loss"] == pytest.approx(trl._metrics["train"]["aux_loss"], rel=1e-6)

    # Without the router loss (router_aux_loss_coef=0), the loss drops by coef * aux_loss and the router weights get
    # another gradient.
    without = DAPOTrainer(
        model=model,
        reward_funcs=constant_reward,
        args=make_config(tmp_path / "no-aux", router_aux_loss_coef=0.0, **COMMON),
        train_dataset=kind_dataset(8),
    )
    without.current_gradient_accumulation_steps = 1
    assert not without.aux_loss_enabled
    gates = [p for name, p in model.named_parameters() if "mlp.gate." in name]
    assert gates
    model.zero_grad()
    loss_without = without.compute_loss(model, {**batch, "num_seqs_in_batch": torch.tensor(5.0)})
    loss_without.backward()
    gate_grads_without = torch.cat([p.grad.flatten() for p in gates])
    aux = ours._metrics["train"]["aux_loss"][-1]
    assert our_loss.item() - loss_without.item() == pytest.approx(0.01 * aux, rel=1e-4)
    model.zero_grad()
    ours.compute_loss(model, {**batch, "num_seqs_in_batch": torch.tensor(5.0)}).backward()
    gate_grads = torch.cat([p.grad.flatten() for p in gates])
    assert (gate_grads - gate_grads_without).norm() > 1e-3 * gate_grads.norm()
    assert "aux_loss" not in without._metrics["train"]


def test_moe_training_logs_aux_loss(tiny_moe_dir, tmp_path):
    from tests.helpers import kind_reward

    args = make_config(tmp_path, max_steps=2, **COMMON)
    trainer = DAPOTrainer(model=tiny_moe_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset(32))
    trainer.train()
    values = logged(trainer, "aux_loss")
    assert len(values) == 2 and all(v > 0 for v in values)


# ---------------------------------------------------------------------------------------------------------------------
# Liger: in TRL 1.16, use_liger_kernel only patches the model's layers (transformers' apply_liger_kernel); the loss is
# computed as without it. liger-kernel (Triton) is not installed here: the delegation and the failure are tested.
# ---------------------------------------------------------------------------------------------------------------------


def test_liger_kernel_delegates_to_trl_and_transformers(tiny_model_dir, tmp_path, monkeypatch):
    import transformers.trainer

    calls = []
    monkeypatch.setattr(transformers.trainer, "apply_liger_kernel", lambda model, config: calls.append(config))
    args = make_config(tmp_path, use_liger_kernel=True, max_steps=1, dynamic_sampling=False, **COMMON)
    with pytest.warns(FutureWarning, match="use_liger_kernel"):  # TRL's own deprecation warning
        trainer = DAPOTrainer(
            model=tiny_model_dir, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset(8)
        )
    trainer.train()
    # TRL keeps Liger's fused cross-entropy off (it would replace the fused LM head the loss reads).
    assert calls == [{"fused_linear_cross_entropy": False}]
    assert logged(trainer, "entropy")


def test_liger_kernel_refusals_and_missing_package_as_trl(tiny_model_dir, tmp_path):
    import importlib.util

    errors = {}
    for name, config_cls, trainer_cls in (("dapo", make_config, DAPOTrainer), ("trl", None, GRPOTrainer)):
        kwargs = dict(use_liger_kernel=True, max_steps=1, **COMMON)
        if config_cls is None:
            args = GRPOConfig(output_dir=str(tmp_path / name), report_to="none", **kwargs)
        else:
            args = make_config(tmp_path / name, dynamic_sampling=False, **kwargs)
        trainer = trainer_cls(
            model=tiny_model_dir, reward_funcs=constant_reward, args=args, train_dataset=kind_dataset(8)
        )
        if importlib.util.find_spec("liger_kernel") is None:
            with pytest.raises(ImportError) as excinfo:
                trainer.train()
            errors[name] = str(excinfo.value)
    assert errors.get("dapo") == errors.get("trl")
    with pytest.raises(ValueError, match="fused_linear_cross_entropy"):
        DAPOTrainer(
            model=tiny_model_dir,
            reward_funcs=constant_reward,
            args=make_config(
                tmp_path / "fused", use_liger_kernel=True, liger_kernel_config={"fused_linear_cross_entropy": True}
            ),
            train_dataset=kind_dataset(8),
        )
