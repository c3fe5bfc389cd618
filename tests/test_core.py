"""Pure DAPO math of `dapo_trl.core`, checked against values computed by hand (arithmetic in the comments)."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from dapo_trl.core import aggregate_loss, group_keep_mask, kl_penalty, overlong_penalty, policy_loss


# ---------------------------------------------------------------------------------------------------------------------
# aggregate_loss
# ---------------------------------------------------------------------------------------------------------------------


def worked_example(dtype=torch.float64):
    """DESIGN.md's example: per-token losses [[.1,.2,.3],[.4,.5],[.6,.7,.8,.9,1.0]], padded to width 5."""
    loss = torch.tensor(
        [[0.1, 0.2, 0.3, 0.0, 0.0], [0.4, 0.5, 0.0, 0.0, 0.0], [0.6, 0.7, 0.8, 0.9, 1.0]],
        dtype=dtype,
    )
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=dtype)
    return loss, mask


# Sequence sums: 0.1+0.2+0.3 = 0.6, 0.4+0.5 = 0.9, 0.6+0.7+0.8+0.9+1.0 = 4.0; total 5.5 over 3+2+5 = 10 tokens.
# Sequence means: 0.6/3 = 0.2, 0.9/2 = 0.45, 4.0/5 = 0.8.
WORKED = {
    "token-mean": 5.5 / 10,  # 0.55
    "seq-mean-token-sum": (0.6 + 0.9 + 4.0) / 3,  # 1.8333...
    "seq-mean-token-mean": (0.2 + 0.45 + 0.8) / 3,  # 0.48333...
    "seq-mean-token-sum-norm": 5.5 / (3 * 5),  # 0.3667 (Dr. GRPO: 3 rows, width of the mask is 5)
}


@pytest.mark.parametrize("mode", list(WORKED))
def test_aggregate_loss_worked_example(mode):
    loss, mask = worked_example()
    assert aggregate_loss(loss, mask, mode).item() == pytest.approx(WORKED[mode], abs=1e-12)


def test_aggregate_loss_worked_example_literal_values():
    loss, mask = worked_example()
    assert aggregate_loss(loss, mask, "token-mean").item() == pytest.approx(0.55)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx(1.833333333333)
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx(0.483333333333)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(0.366666666667)


def test_aggregate_loss_default_mode_is_token_mean():
    loss, mask = worked_example()
    assert aggregate_loss(loss, mask).item() == pytest.approx(0.55)


def test_aggregate_loss_ignores_values_under_the_mask():
    # Garbage in padded positions must not leak into any mode.
    loss, mask = worked_example()
    noisy = torch.where(mask.bool(), loss, torch.full_like(loss, 123.0))
    for mode, expected in WORKED.items():
        assert aggregate_loss(noisy, mask, mode).item() == pytest.approx(expected, abs=1e-12)


def test_aggregate_loss_bool_mask():
    loss, mask = worked_example()
    assert aggregate_loss(loss, mask.bool(), "token-mean").item() == pytest.approx(0.55)


@pytest.mark.parametrize(
    "mode,kwargs,expected",
    [
        ("token-mean", {"num_tokens": 20}, 5.5 / 20),  # 0.275
        ("token-mean", {"num_tokens": torch.tensor(20.0, dtype=torch.float64)}, 5.5 / 20),
        ("token-mean", {"num_tokens": 0}, 5.5 / 1),  # a zero denominator falls back to 1, never NaN
        ("token-mean", {"num_tokens": torch.tensor(0.0, dtype=torch.float64)}, 5.5 / 1),
        ("token-mean", {"num_seqs": 100, "seq_len": 100}, 5.5 / 10),  # other modes' overrides are ignored
        ("seq-mean-token-sum", {"num_seqs": 6}, 5.5 / 6),  # (0.6+0.9+4.0)/6
        ("seq-mean-token-sum", {"num_seqs": torch.tensor(6.0, dtype=torch.float64)}, 5.5 / 6),
        ("seq-mean-token-mean", {"num_seqs": 6}, (0.2 + 0.45 + 0.8) / 6),  # 1.45/6
        ("seq-mean-token-mean", {"num_tokens": 100}, (0.2 + 0.45 + 0.8) / 3),
        ("seq-mean-token-sum-norm", {"seq_len": 10}, 5.5 / 30),  # 3 rows of max length 10
        ("seq-mean-token-sum-norm", {"seq_len": 10, "num_rows": 8}, 5.5 / 80),
        ("seq-mean-token-sum-norm", {"num_tokens": 100, "num_seqs": 100}, 5.5 / 15),
    ],
)
def test_aggregate_loss_global_overrides(mode, kwargs, expected):
    loss, mask = worked_example()
    assert aggregate_loss(loss, mask, mode, **kwargs).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mode", list(WORKED))
def test_aggregate_loss_split_batch_with_global_denominators_sums_to_whole(mode):
    # Gradient accumulation: micro-batches {row 0, row 1} and {row 2} with the global denominators
    # (10 tokens, 3 sequences, width 5) must add up to the whole-batch value.
    loss, mask = worked_example()
    kwargs = {"num_tokens": 10, "num_seqs": 3, "seq_len": 5, "num_rows": 3}
    parts = aggregate_loss(loss[:2], mask[:2], mode, **kwargs) + aggregate_loss(loss[2:], mask[2:], mode, **kwargs)
    assert parts.item() == pytest.approx(WORKED[mode], abs=1e-12)


@pytest.mark.parametrize("mode", list(WORKED))
def test_aggregate_loss_fully_masked_batch_is_zero_not_nan(mode):
    loss = torch.rand(3, 4, dtype=torch.float64)
    out = aggregate_loss(loss, torch.zeros(3, 4, dtype=torch.float64), mode)
    assert torch.isfinite(out)
    assert out.item() == 0.0


@pytest.mark.parametrize("mode", list(WORKED))
def test_aggregate_loss_fully_masked_batch_has_finite_zero_gradient(mode):
    loss = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    aggregate_loss(loss, torch.zeros(2, 3, dtype=torch.float64), mode).backward()
    assert torch.equal(loss.grad, torch.zeros_like(loss))


@pytest.mark.parametrize("mode", [mode for mode in WORKED if mode != "seq-mean-token-sum-norm"])
def test_aggregate_loss_rows_without_tokens_are_not_sequences(mode):
    # A fourth, fully masked row changes nothing: still 10 tokens, still 3 sequences, width still 5.
    loss, mask = worked_example()
    loss = torch.cat([loss, torch.full((1, 5), 7.0, dtype=loss.dtype)])
    mask = torch.cat([mask, torch.zeros(1, 5, dtype=mask.dtype)])
    assert aggregate_loss(loss, mask, mode).item() == pytest.approx(WORKED[mode], abs=1e-12)


def test_aggregate_loss_sum_norm_counts_every_row():
    # Dr. GRPO's normalizer is a constant (rows * max length, as TRL's dr_grpo): a fully masked row still counts.
    loss, mask = worked_example()
    loss = torch.cat([loss, torch.full((1, 5), 7.0, dtype=loss.dtype)])
    mask = torch.cat([mask, torch.zeros(1, 5, dtype=mask.dtype)])
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(5.5 / 20, abs=1e-12)


def test_aggregate_loss_gradient_token_mean_weights_every_token_equally():
    # d(token-mean)/d(loss_ij) = mask_ij / 10; seq-mean-token-mean gives 1/(3 * len_i) instead.
    loss, mask = worked_example()
    loss.requires_grad_(True)
    aggregate_loss(loss, mask, "token-mean").backward()
    assert torch.allclose(loss.grad, mask / 10)
    loss.grad = None
    aggregate_loss(loss, mask, "seq-mean-token-mean").backward()
    lengths = torch.tensor([3.0, 2.0, 5.0], dtype=torch.float64)
    assert torch.allclose(loss.grad, mask / (3 * lengths[:, None]))


def test_aggregate_loss_unknown_mode_raises_naming_the_mode():
    loss, mask = worked_example()
    with pytest.raises(ValueError, match="token-median"):
        aggregate_loss(loss, mask, "token-median")


# ---------------------------------------------------------------------------------------------------------------------
# policy_loss
# ---------------------------------------------------------------------------------------------------------------------


def ratio_inputs(ratios, dtype=torch.float64):
    """log_probs, old_log_probs such that exp(log_probs - old_log_probs) == ratios."""
    ratios = torch.as_tensor(ratios, dtype=dtype)
    return torch.log(ratios), torch.zeros_like(ratios)


def one_token_loss(ratio, advantage, **kwargs):
    lp, old = ratio_inputs([[ratio]])
    loss, metrics = policy_loss(lp, old, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1), **kwargs)
    return loss.item(), metrics


def test_clip_higher_is_asymmetric():
    # ratio 1.25, A = +1: upper bound 1 + 0.28 = 1.28 > 1.25, not clipped: loss = -1 * 1.25.
    loss, metrics = one_token_loss(1.25, 1.0, epsilon_low=0.2, epsilon_high=0.28)
    assert loss == pytest.approx(-1.25)
    assert metrics["clip_ratio/high_mean"].item() == 0.0
    # Same token with epsilon_high = 0.2: clipped at 1.2: loss = max(-1.25, -1.2) = -1.2.
    loss, metrics = one_token_loss(1.25, 1.0, epsilon_low=0.2, epsilon_high=0.2)
    assert loss == pytest.approx(-1.2)
    assert metrics["clip_ratio/high_mean"].item() == 1.0
    # ratio 0.75, A = -1, epsilon_low = 0.2: floor 0.8: loss = max(0.75, 0.8) = 0.8 (clipped), whatever epsilon_high.
    loss, metrics = one_token_loss(0.75, -1.0, epsilon_low=0.2, epsilon_high=0.28)
    assert loss == pytest.approx(0.8)
    assert metrics["clip_ratio/low_mean"].item() == 1.0
    # The floor uses epsilon_low, not epsilon_high: with epsilon_low = 0.28 the floor is 0.72 < 0.75: loss 0.75.
    loss, metrics = one_token_loss(0.75, -1.0, epsilon_low=0.28, epsilon_high=0.2)
    assert loss == pytest.approx(0.75)
    assert metrics["clip_ratio/low_mean"].item() == 0.0


@pytest.mark.parametrize(
    "ratio,advantage,expected",
    [
        # A > 0: loss = max(-A r, -A clip(r, 0.8, 1.28))
        (1.5, 2.0, -2.0 * 1.28),  # above the ceiling: clipped, -2.56
        (0.5, 2.0, -2.0 * 0.5),  # below the floor with A > 0: the unclipped branch is larger: -1.0
        (1.1, 2.0, -2.0 * 1.1),  # inside: -2.2
        # A < 0
        (0.5, -2.0, 2.0 * 0.8),  # below the floor: clipped, 1.6
        (1.5, -2.0, 2.0 * 1.5),  # above the ceiling with A < 0: not clipped, 3.0
        (1.0, -2.0, 2.0),
        # A = 0: zero loss whatever the ratio
        (3.0, 0.0, 0.0),
    ],
)
def test_policy_loss_single_token_values(ratio, advantage, expected):
    loss, _ = one_token_loss(ratio, advantage)
    assert loss == pytest.approx(expected, abs=1e-12)


def clip_batch():
    # row 0, A = +1: ratios [1.5, 1.3, 0.5, 2.0], mask [1, 1, 1, 0]
    #   high where r > 1.28: t0, t1 (t3 also, but masked)       -> 2 counted
    # row 1, A = -1: ratios [0.5, 1.5, 0.7, 5.0], mask [1, 1, 0, 0]
    #   low where r < 0.8: t0 (t2 also, but masked)               -> 1 counted
    #   dual (clip_ratio_c = 1.4) where r > 1.4: t1 (t3 masked)   -> 1 counted
    # masked-in tokens: 3 + 2 = 5
    lp, old = ratio_inputs([[1.5, 1.3, 0.5, 2.0], [0.5, 1.5, 0.7, 5.0]])
    advantages = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    return lp, old, advantages, mask


def test_clip_fraction_metrics_count_only_masked_in_tokens():
    lp, old, advantages, mask = clip_batch()
    loss, metrics = policy_loss(lp, old, advantages, mask, 0.2, 0.28, clip_ratio_c=1.4)
    assert set(metrics) == {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/dual_mean"}
    assert metrics["clip_ratio/low_mean"].item() == pytest.approx(1 / 5)
    assert metrics["clip_ratio/high_mean"].item() == pytest.approx(2 / 5)
    assert metrics["clip_ratio/dual_mean"].item() == pytest.approx(1 / 5)
    for value in metrics.values():
        assert value.dim() == 0
    # Per-token losses (not masked):
    # row 0 (A=+1): max(-1.5,-1.28)=-1.28, max(-1.3,-1.28)=-1.28, max(-0.5,-0.8)=-0.5, max(-2,-1.28)=-1.28
    # row 1 (A=-1): max(0.5,0.8)=0.8, min(max(1.5,1.2), 1.4)=1.4, max(0.7,0.8)=0.8, min(max(5,1.2), 1.4)=1.4
    expected = torch.tensor([[-1.28, -1.28, -0.5, -1.28], [0.8, 1.4, 0.8, 1.4]], dtype=torch.float64)
    assert torch.allclose(loss, expected)


def test_clip_fraction_metrics_without_dual_clip():
    lp, old, advantages, mask = clip_batch()
    loss, metrics = policy_loss(lp, old, advantages, mask, 0.2, 0.28)
    assert set(metrics) == {"clip_ratio/low_mean", "clip_ratio/high_mean"}
    assert metrics["clip_ratio/low_mean"].item() == pytest.approx(1 / 5)
    assert metrics["clip_ratio/high_mean"].item() == pytest.approx(2 / 5)
    # Without dual clip, row 1's large ratios keep their loss: t1 = 1.5, t3 = 5.0.
    assert loss[1, 1].item() == pytest.approx(1.5)
    assert loss[1, 3].item() == pytest.approx(5.0)


def test_clip_fraction_metrics_fully_masked_are_zero_not_nan():
    lp, old, advantages, mask = clip_batch()
    _, metrics = policy_loss(lp, old, advantages, torch.zeros_like(mask), clip_ratio_c=1.4)
    for value in metrics.values():
        assert value.item() == 0.0


def test_dual_clip_bounds_negative_advantages_only():
    # A = -2, ratio 5, clip_ratio_c = 3: max(10, 2*1.2) = 10 > -A*3 = 6: loss 6.
    loss, metrics = one_token_loss(5.0, -2.0, clip_ratio_c=3.0)
    assert loss == pytest.approx(6.0)
    assert metrics["clip_ratio/dual_mean"].item() == 1.0
    # Without it: 10.
    assert one_token_loss(5.0, -2.0)[0] == pytest.approx(10.0)
    # A = -2, ratio 2 < 3: loss 4, untouched by the dual clip.
    loss, metrics = one_token_loss(2.0, -2.0, clip_ratio_c=3.0)
    assert loss == pytest.approx(4.0)
    assert metrics["clip_ratio/dual_mean"].item() == 0.0
    # A = +2, ratio 5: clip-higher gives -2 * 1.28 = -2.56 with or without clip_ratio_c.
    loss, metrics = one_token_loss(5.0, 2.0, clip_ratio_c=3.0)
    assert loss == pytest.approx(-2.56)
    assert metrics["clip_ratio/dual_mean"].item() == 0.0
    assert one_token_loss(5.0, 2.0)[0] == pytest.approx(-2.56)


def test_dual_clip_has_zero_gradient():
    lp, old = ratio_inputs([[5.0]])
    lp.requires_grad_(True)
    loss, _ = policy_loss(lp, old, torch.tensor([-2.0], dtype=torch.float64), torch.ones(1, 1), clip_ratio_c=3.0)
    loss.sum().backward()
    assert lp.grad.item() == 0.0


@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
def test_sequence_and_token_advantages_agree(clip_ratio_c):
    generator = torch.Generator().manual_seed(0)
    lp = torch.randn(4, 6, generator=generator, dtype=torch.float64) * 0.5
    old = torch.randn(4, 6, generator=generator, dtype=torch.float64) * 0.5
    advantages = torch.randn(4, generator=generator, dtype=torch.float64)
    mask = (torch.rand(4, 6, generator=generator) > 0.3).double()
    loss_seq, metrics_seq = policy_loss(lp, old, advantages, mask, clip_ratio_c=clip_ratio_c)
    loss_tok, metrics_tok = policy_loss(lp, old, advantages[:, None].expand(4, 6), mask, clip_ratio_c=clip_ratio_c)
    assert loss_seq.shape == loss_tok.shape == (4, 6)
    assert torch.equal(loss_seq, loss_tok)
    assert metrics_seq.keys() == metrics_tok.keys()
    for name in metrics_seq:
        assert torch.equal(metrics_seq[name], metrics_tok[name])


@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_log_ratios_give_finite_loss_and_gradients(clip_ratio_c, dtype):
    # log-ratios of +-1e4 (exp overflows without a clamp) with positive, negative and zero advantages.
    lp = torch.tensor([[1e4, -1e4, 1e4, -1e4, 1e4, -1e4]], dtype=dtype, requires_grad=True)
    old = torch.zeros(1, 6, dtype=dtype)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 0.0, 0.0]], dtype=dtype)
    loss, metrics = policy_loss(lp, old, advantages, torch.ones(1, 6), clip_ratio_c=clip_ratio_c)
    assert torch.isfinite(loss).all()
    for value in metrics.values():
        assert torch.isfinite(value)
    # A = 0 with a huge ratio: 0 loss (not 0 * inf = NaN).
    assert loss[0, 4].item() == 0.0 and loss[0, 5].item() == 0.0
    # A = +1, huge ratio: clipped at 1.28.
    assert loss[0, 0].item() == pytest.approx(-1.28)
    if clip_ratio_c is not None:
        assert loss[0, 2].item() == pytest.approx(clip_ratio_c)  # A = -1: bounded by -A * c
    aggregate_loss(loss, torch.ones(1, 6)).backward()
    assert torch.isfinite(lp.grad).all()


def test_gradient_matches_formula_float64():
    # d/dlogp of -A * r is -A * r (since dr/dlogp = r) where the unclipped branch is active; 0 where clipped.
    generator = torch.Generator().manual_seed(1)
    lp = (torch.randn(6, 8, generator=generator, dtype=torch.float64) * 0.4).requires_grad_(True)
    old = torch.randn(6, 8, generator=generator, dtype=torch.float64) * 0.4
    advantages = torch.randn(6, generator=generator, dtype=torch.float64)
    mask = torch.ones(6, 8, dtype=torch.float64)
    eps_low, eps_high = 0.2, 0.28
    loss, _ = policy_loss(lp, old, advantages, mask, eps_low, eps_high)
    loss.sum().backward()

    ratio = torch.exp(lp.detach() - old)
    a = advantages[:, None].expand_as(ratio)
    clipped = ((ratio > 1 + eps_high) & (a > 0)) | ((ratio < 1 - eps_low) & (a < 0))
    assert clipped.any() and (~clipped).any()  # both branches exercised
    expected = torch.where(clipped, torch.zeros_like(ratio), -a * ratio)
    assert torch.allclose(lp.grad, expected, rtol=1e-12, atol=1e-12)
    # old_log_probs are constants here; the gradient only flows through log_probs.


def test_gradient_matches_formula_with_dual_clip():
    lp, old = ratio_inputs([[0.5, 1.1, 2.0, 4.0, 1.1, 4.0]])
    lp.requires_grad_(True)
    advantages = torch.tensor([[-1.0, -1.0, -1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    loss, _ = policy_loss(lp, old, advantages, torch.ones(1, 6), clip_ratio_c=3.0)
    loss.sum().backward()
    # A=-1: r=0.5 low-clipped -> 0; r=1.1 -> -A r = 1.1; r=2 (< 3) -> 2; r=4 dual-clipped -> 0
    # A=+1: r=1.1 -> -1.1; r=4 high-clipped -> 0
    expected = torch.tensor([[0.0, 1.1, 2.0, 0.0, -1.1, 0.0]], dtype=torch.float64)
    assert torch.allclose(lp.grad, expected, atol=1e-12)


def trl_reference(lp, old, advantages, eps_low, eps_high):
    """TRL's GRPO/DAPO per-token loss: -min(r A, clamp(r, 1 - el, 1 + eh) A)."""
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = torch.exp(lp - old)
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages)


@pytest.mark.parametrize("eps_low,eps_high", [(0.2, 0.28), (0.2, 0.2), (0.1, 0.5), (0.0, 0.0)])
@pytest.mark.parametrize("token_advantages", [False, True])
def test_matches_trl_formula_on_random_inputs(eps_low, eps_high, token_advantages):
    generator = torch.Generator().manual_seed(42)
    lp = (torch.randn(8, 16, generator=generator, dtype=torch.float64) * 0.5).requires_grad_(True)
    old = torch.randn(8, 16, generator=generator, dtype=torch.float64) * 0.5
    shape = (8, 16) if token_advantages else (8,)
    advantages = torch.randn(*shape, generator=generator, dtype=torch.float64)
    mask = torch.ones(8, 16, dtype=torch.float64)
    ours, _ = policy_loss(lp, old, advantages, mask, eps_low, eps_high)
    ref = trl_reference(lp, old, advantages, eps_low, eps_high)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    (grad_ours,) = torch.autograd.grad(ours.sum(), lp)
    (grad_ref,) = torch.autograd.grad(ref.sum(), lp)
    assert torch.allclose(grad_ours, grad_ref, rtol=1e-12, atol=1e-12)


def test_on_policy_ratio_one_never_clipped():
    # old = logp.detach(): r = 1 everywhere, nothing is clipped, loss = -A, gradient = -A.
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    loss, metrics = policy_loss(lp, lp.detach(), advantages, torch.ones(3, 4), clip_ratio_c=3.0)
    assert torch.allclose(loss, -advantages[:, None].expand(3, 4))
    assert all(value.item() == 0.0 for value in metrics.values())
    loss.sum().backward()
    assert torch.allclose(lp.grad, -advantages[:, None].expand(3, 4))


# ---------------------------------------------------------------------------------------------------------------------
# overlong_penalty
# ---------------------------------------------------------------------------------------------------------------------


def test_overlong_penalty_piecewise_linear():
    # L_max = 16, L_cache = 4: 0 up to 12, then (12 - L) / 4 down to -1 at 16, -1 beyond.
    lengths = [0, 5, 12, 13, 14, 15, 16, 17, 100]
    expected = [0.0, 0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0, -1.0]
    out = overlong_penalty(lengths, max_completion_length=16, buffer_length=4)
    assert out.tolist() == pytest.approx(expected)


def test_overlong_penalty_factor_scales():
    # factor 0.5: 13 -> -0.25 * 0.5 = -0.125, 14 -> -0.25, 16 -> -0.5, 20 -> -0.5
    out = overlong_penalty([10, 13, 14, 16, 20], 16, 4, penalty_factor=0.5)
    assert out.tolist() == pytest.approx([0.0, -0.125, -0.25, -0.5, -0.5])
    # factor 0: no penalty at all
    assert overlong_penalty([10, 16, 30], 16, 4, penalty_factor=0.0).abs().sum().item() == 0.0


def test_overlong_penalty_list_and_tensor_inputs_agree():
    lengths = [3, 9, 11, 12, 40]
    # L_max = 12, L_cache = 4: expected from 8: 3 -> 0, 9 -> -0.25, 11 -> -0.75, 12 -> -1, 40 -> -1
    expected = [0.0, -0.25, -0.75, -1.0, -1.0]
    from_list = overlong_penalty(lengths, 12, 4)
    from_tensor = overlong_penalty(torch.tensor(lengths), 12, 4)
    assert isinstance(from_list, torch.Tensor)
    assert from_list.shape == (5,)
    assert from_list.tolist() == pytest.approx(expected)
    assert torch.equal(from_list, from_tensor)


def test_overlong_penalty_buffer_equal_to_max_is_allowed():
    # L_max = L_cache = 8: expected 0, so the penalty is -L/8 from the first token.
    assert overlong_penalty([0, 4, 8], 8, 8).tolist() == pytest.approx([0.0, -0.5, -1.0])


@pytest.mark.parametrize("buffer_length", [0, -1, 17])
def test_overlong_penalty_invalid_buffer_raises(buffer_length):
    with pytest.raises(ValueError, match="buffer_length"):
        overlong_penalty([1, 2], max_completion_length=16, buffer_length=buffer_length)


# ---------------------------------------------------------------------------------------------------------------------
# group_keep_mask
# ---------------------------------------------------------------------------------------------------------------------


def keep(values, num_generations, **kwargs):
    return group_keep_mask(torch.tensor(values, dtype=torch.float64), num_generations, **kwargs).tolist()


def test_group_keep_mask_binary():
    # groups of 3: [1,1,1] all right, [0,0,0] all wrong, [1,0,1] and [0,0,1] mixed
    assert keep([1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1], 3) == [False, False, True, True]


def test_group_keep_mask_returns_bool_per_group():
    out = group_keep_mask(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2)
    assert out.dtype == torch.bool
    assert out.shape == (2,)


def test_group_keep_mask_tolerance():
    # default atol 1e-6: a spread of 1e-9 is noise (dropped), 1e-3 is signal (kept)
    assert keep([1.0, 1.0 + 1e-9, 1.0, 1.0 + 1e-3], 2) == [False, True]
    # custom atol
    assert keep([1.0, 1.0 + 1e-3], 2, atol=1e-2) == [False]
    assert keep([1.0, 1.0 + 1e-3], 2, atol=1e-4) == [True]


def test_group_keep_mask_non_finite_values_are_ignored():
    nan, inf = math.nan, math.inf
    assert keep([1, nan], 2) == [False]  # one finite value: nothing to compare
    assert keep([1, 0, nan], 3) == [True]  # the finite ones differ
    assert keep([1, 1, nan], 3) == [False]  # the finite ones agree
    assert keep([nan, nan, nan], 3) == [False]
    assert keep([1, inf], 2) == [False]
    assert keep([inf, -inf], 2) == [False]
    assert keep([1, 0, inf], 3) == [True]
    assert keep([1, 1, -inf], 3) == [False]


def test_group_keep_mask_none_rewards_as_nan():
    # A reward function returning None: TRL turns it into NaN.
    rewards = [1.0, None, None, None, 0.0, None, 1.0, 0.5]
    values = torch.tensor([math.nan if r is None else r for r in rewards])
    assert group_keep_mask(values, 2).tolist() == [False, False, False, True]


def test_group_keep_mask_non_binary_rewards():
    # groups of 4 with continuous scores: equal scores dropped, any spread kept
    values = [0.3, 0.3, 0.3, 0.3, 0.1, 0.5, 0.5, 0.9, -2.0, -2.0, -2.0, -1.5]
    assert keep(values, 4) == [False, True, True]


def test_group_keep_mask_float32_and_int_inputs():
    assert group_keep_mask(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2).tolist() == [True, False]
    assert group_keep_mask(torch.tensor([1, 0, 2, 2]), 2).tolist() == [True, False]
    assert group_keep_mask([1.0, 0.0, 2.0, 2.0], 2).tolist() == [True, False]


@pytest.mark.parametrize(
    "values,num_generations", [([1.0, 0.0, 1.0], 2), ([1.0] * 5, 4), ([[1.0, 0.0], [1.0, 1.0]], 2)]
)
def test_group_keep_mask_wrong_shape_raises(values, num_generations):
    with pytest.raises(ValueError, match="num_generations"):
        group_keep_mask(torch.tensor(values), num_generations)


# ---------------------------------------------------------------------------------------------------------------------
# kl_penalty
# ---------------------------------------------------------------------------------------------------------------------


def test_kl_penalty_zero_when_equal():
    lp = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(kl_penalty(lp, lp.clone()), torch.zeros(3, 5, dtype=torch.float64))


def test_kl_penalty_hand_values():
    # d = ref - logp; k3 = exp(d) - d - 1
    # logp 0, ref 1: d = 1: e - 2 = 0.718281828...
    # logp 1, ref 0: d = -1: e^-1 + 1 - 1 = 0.367879441...
    lp = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ref = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert kl_penalty(lp, ref).tolist() == pytest.approx([math.e - 2, math.exp(-1)], abs=1e-12)


def test_kl_penalty_positive_and_matches_k3():
    generator = torch.Generator().manual_seed(3)
    lp = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    ref = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    out = kl_penalty(lp, ref)
    d = ref - lp
    assert torch.allclose(out, torch.exp(d) - d - 1, rtol=1e-12, atol=1e-12)
    assert (out > 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# The policy-loss registry and the other TRL loss pieces, against TRL's own functions where TRL exposes them
# ---------------------------------------------------------------------------------------------------------------------


def random_inputs(seed=0, shape=(6, 9), scale=0.5):
    generator = torch.Generator().manual_seed(seed)
    lp = (-torch.rand(*shape, generator=generator, dtype=torch.float64) * 3).requires_grad_(True)
    old = lp.detach() + scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    advantages = torch.randn(shape[0], generator=generator, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 6, 1, 7, 3])[: shape[0]]
    mask = (torch.arange(shape[1])[None] < lengths[:, None]).double()
    return lp, old, advantages, mask


def test_registry_covers_every_trl_loss_type():
    from trl import GRPOConfig

    from dapo_trl.core import LOSS_AGG_MODES, LOSS_TYPES, POLICY_LOSSES

    help_text = next(f for f in dataclasses.fields(GRPOConfig) if f.name == "loss_type").metadata["help"]
    listed = help_text.split("Supported values are ")[1].split(". ")[0]
    assert set(re.findall(r"'(\w+)'", listed)) == set(LOSS_TYPES)
    for surrogate, mode in LOSS_TYPES.values():
        assert surrogate in POLICY_LOSSES and mode in LOSS_AGG_MODES


def test_importance_log_weights_sequence_is_masked_mean():
    from dapo_trl.core import importance_log_weights

    lp, old, _, mask = random_inputs()
    seq = importance_log_weights(lp, old, mask, "sequence")
    expected = ((lp - old) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
    assert seq.shape == (6, 1)
    assert torch.allclose(seq, expected)
    with pytest.raises(ValueError, match="group"):
        importance_log_weights(lp, old, mask, "group")


def test_sequence_level_clip_clips_whole_sequences():
    """GSPO: one ratio per sequence, so a sequence is clipped (zero gradient) on all of its tokens or none."""
    lp, old, advantages, mask = random_inputs(scale=1.0)
    loss, _ = policy_loss(lp, old, advantages, mask, importance_sampling_level="sequence")
    (grad,) = torch.autograd.grad((loss * mask).sum(), lp)
    per_row_zero = [(grad[i][mask[i].bool()] == 0).tolist() for i in range(6)]
    assert all(len(set(row)) == 1 for row in per_row_zero)


@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
def test_two_sided_clipping_matches_trl_formula(clip_ratio_c):
    """TRL's delta: coef_1 = min(r, delta) in the unclipped branch; with dual-clip both caps apply."""
    lp, old, advantages, mask = random_inputs(scale=1.0)
    ours, _ = policy_loss(lp, old, advantages, mask, 0.2, 0.28, clip_ratio_c, delta=1.5)
    ratio = torch.exp(lp - old)
    a = advantages[:, None]
    ref = -torch.min(torch.clamp(ratio, max=1.5) * a, torch.clamp(ratio, 0.8, 1.28) * a)
    if clip_ratio_c is not None:
        ref = torch.where(a < 0, torch.min(ref, -a * clip_ratio_c), ref)
    assert torch.allclose(ours, ref)
    plain, _ = policy_loss(lp, old, advantages, mask, 0.2, 0.28, clip_ratio_c)
    assert not torch.allclose(ours, plain)  # delta binds on these inputs


def test_cispo_loss_formula_and_gradient():
    from dapo_trl.core import cispo_loss

    lp, old, advantages, mask = random_inputs(scale=1.0)
    loss, metrics = cispo_loss(lp, old, advantages, mask, epsilon_high=1.5)
    weight = torch.clamp(torch.exp(lp.detach() - old), max=1.5)
    assert torch.allclose(loss, -weight * advantages[:, None] * lp)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    assert torch.allclose(grad, -weight * advantages[:, None])  # the weight carries no gradient
    clipped = (torch.exp(lp - old) > 1.5) & (advantages[:, None] > 0)
    assert metrics["cispo_clip_ratio"].item() == pytest.approx(((clipped * mask).sum() / mask.sum()).item())


def test_sapo_loss_formula():
    from dapo_trl.core import sapo_loss

    lp, old, advantages, mask = random_inputs(scale=1.0)
    loss, metrics = sapo_loss(lp, old, advantages, mask, temperature_pos=2.0, temperature_neg=3.0)
    a = advantages[:, None]
    tau = torch.where(a > 0, 2.0, 3.0).double()
    assert torch.allclose(loss, -torch.sigmoid(tau * (torch.exp(lp - old) - 1)) * 4 / tau * a)
    assert metrics == {}


@pytest.mark.parametrize("with_is_ratio", [False, True])
def test_vespo_weights_equal_trls(with_is_ratio):
    from trl import GRPOTrainer

    from dapo_trl.core import vespo_loss, vespo_weights

    lp, old, advantages, mask = random_inputs(scale=0.3)
    is_ratio = 0.5 + torch.rand(mask.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    is_ratio = is_ratio if with_is_ratio else None
    a = advantages[:, None]
    params = dict(k_pos=1.5, lambda_pos=2.5, k_neg=3.5, lambda_neg=1.5)
    ours = vespo_weights(a, lp.detach() - old, mask, is_ratio, **params)
    trl = GRPOTrainer.get_gamma_weights(a, lp.detach() - old, mask, is_ratio, **params)
    assert torch.allclose(ours, trl, rtol=1e-12, atol=0)
    loss, metrics = vespo_loss(lp, old, advantages, mask, **params, importance_sampling_ratio=is_ratio)
    assert torch.allclose(loss, -trl * a * lp)
    assert not loss.detach().isnan().any()


def test_off_policy_sequence_mask_equals_trls():
    from trl import GRPOTrainer

    from dapo_trl.core import off_policy_sequence_mask

    lp, old, advantages, mask = random_inputs(scale=0.5)
    sampling = old.clone()
    sampling[0, 2] = math.nan  # an unscorable token gives no KL evidence
    for threshold in (-0.2, 0.0, 0.1, 1.0):
        ours = off_policy_sequence_mask(advantages, lp, sampling, mask, threshold)
        trl = GRPOTrainer.get_off_policy_mask(advantages[:, None], lp, sampling, mask, threshold)
        assert torch.equal(ours, trl)
    assert ours.shape == (6, 1)
    kept = off_policy_sequence_mask(advantages, lp, sampling, mask, -10.0).squeeze(1).bool()
    assert torch.equal(kept, advantages >= 0)  # a low threshold drops every negative-advantage sequence


def test_high_entropy_mask_keeps_the_top_quantile_of_loss_tokens():
    from dapo_trl.core import high_entropy_mask

    entropies = torch.arange(12, dtype=torch.float32).view(2, 6)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0  # entropies 10 and 11 are padding
    kept = high_entropy_mask(entropies, mask, top_quantile=0.2)  # top 20% of 0..9: quantile 0.8 = 7.2
    assert kept.sum() == 2 and kept[1, 2] and kept[1, 3]
    assert high_entropy_mask(entropies, mask, 1.0).sum() == 10  # everything
    assert high_entropy_mask(entropies, mask, 0.0).sum() == 1  # the highest only
    pool = torch.tensor([0.0, 100.0])  # another process' tokens move the threshold (quantile over the pool)
    assert high_entropy_mask(entropies, mask, 0.5, pool=pool).sum() == 0
    assert not high_entropy_mask(entropies, torch.zeros(2, 6), 0.5).any()


def test_adaptive_entropy_coef_steps_within_bounds():
    from dapo_trl.core import adaptive_entropy_coef

    assert adaptive_entropy_coef(0.5, 0.1, 0.2, 0.1, 0.0, 0.55) == pytest.approx(0.55)  # up, capped
    assert adaptive_entropy_coef(0.05, 0.3, 0.2, 0.1, 0.0, 1.0) == 0.0  # down, floored
    assert adaptive_entropy_coef(0.3, 0.2, 0.2, 0.1, 0.0, 1.0) == pytest.approx(0.4)  # at the target: up


def test_policy_losses_apply_vllm_importance_sampling_ratio():
    from dapo_trl.core import POLICY_LOSSES

    lp, old, advantages, mask = random_inputs()
    ratio = torch.full(mask.shape, 0.5, dtype=torch.float64)
    for name in ("clip", "cispo", "sapo"):
        plain, _ = POLICY_LOSSES[name](lp, old, advantages, mask)
        corrected, _ = POLICY_LOSSES[name](lp, old, advantages, mask, importance_sampling_ratio=ratio)
        assert torch.allclose(corrected, 0.5 * plain), name
