"""core.group_advantages, group_carries_gradient, importance_sampling_ratio and nanstd against hand-computed values
and TRL's own helpers."""

import math

import pytest
import torch
from trl.trainer.utils import nanstd as trl_nanstd

from dapo_trl import core


NAN = math.nan


def test_nanstd_matches_trl():
    x = torch.tensor([[1.0, NAN, 3.0, 4.0], [2.0, 2.0, 5.0, NAN], [NAN, NAN, 1.0, NAN]])
    torch.testing.assert_close(core.nanstd(x, dim=1), trl_nanstd(x, dim=1), equal_nan=True)
    torch.testing.assert_close(core.nanstd(x), trl_nanstd(x))
    assert core.nanstd(x, dim=1, keepdim=True).shape == (3, 1)


def test_group_advantages_sum_then_normalize_by_hand():
    rewards = torch.tensor([[1.0, 0.5], [0.0, 0.5], [1.0, 0.0], [1.0, 1.0]])  # two groups of 2, two functions
    weights = torch.tensor([1.0, 2.0])
    # totals: [2, 1, 1, 3]; group means [1.5, 2]; group stds (unbiased) [0.7071, 1.4142]
    adv, zero = core.group_advantages(rewards, weights, 2, "group")
    expected = torch.tensor(
        [0.5 / (0.70711 + 1e-4), -0.5 / (0.70711 + 1e-4), -1 / (1.41421 + 1e-4), 1 / (1.41421 + 1e-4)]
    )
    torch.testing.assert_close(adv, expected, rtol=1e-4, atol=1e-5)
    assert zero.tolist() == [False] * 4
    adv, _ = core.group_advantages(rewards, weights, 2, "none")
    assert adv.tolist() == [0.5, -0.5, -1.0, 1.0]
    adv, _ = core.group_advantages(rewards, weights, 2, "batch")
    batch_std = torch.tensor([2.0, 1.0, 1.0, 3.0]).std().item()  # 0.9574
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -1.0, 1.0]) / (batch_std + 1e-4))


def test_group_advantages_normalize_then_sum_by_hand():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    weights = torch.tensor([1.0, 1.0])
    adv, _ = core.group_advantages(rewards, weights, 2, "group", "normalize_then_sum")
    s = 0.5 / (math.sqrt(0.5) + 1e-4)  # each function, normalized in its group: +-0.7070
    combined = torch.tensor([s - s, -s + s, s + 0.0, -s + 0.0])  # function 2 is constant in group 2: 0
    expected = (combined - combined.mean()) / (combined.std() + 1e-4)
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-6)


def test_group_advantages_unscorable_rows_get_zero_and_leave_the_baseline():
    rewards = torch.tensor([[1.0], [NAN], [0.0], [1.0], [1.0], [1.0]])
    adv, zero = core.group_advantages(rewards, torch.ones(1), 3, "none")
    assert adv.tolist() == pytest.approx([0.5, 0.0, -0.5, 0.0, 0.0, 0.0])
    assert zero.tolist() == [False, False, False, True, True, True]


def test_group_advantages_refuses_unknown_modes():
    with pytest.raises(ValueError, match="scale_rewards='mean'"):
        core.group_advantages(torch.ones(2, 1), torch.ones(1), 2, "mean")
    with pytest.raises(ValueError, match="aggregation='sum'"):
        core.group_advantages(torch.ones(2, 1), torch.ones(1), 2, "group", "sum")


def test_group_carries_gradient_needs_a_loss_row_with_nonzero_advantage():
    # columns: accuracy, overlong penalty
    rewards = torch.tensor(
        [
            [1.0, -1.0], [0.0, 0.0], [0.0, 0.0],   # only correct one truncated and penalized: totals equal
            [1.0, 0.0], [0.0, 0.0], [0.0, 0.0],    # correct one reaches the loss
            [1.0, 0.0], [0.0, 0.0], [0.0, 0.0],    # correct one truncated, but the wrong ones get -1/3: gradient
        ]
    )  # fmt: skip
    reaches = torch.tensor([False, True, True, True, True, True, False, True, True])
    carries = core.group_carries_gradient(rewards, torch.ones(2), reaches, 3)
    assert carries.tolist() == [False, True, True]
    nothing_reaches = torch.zeros(9, dtype=torch.bool)
    assert core.group_carries_gradient(rewards, torch.ones(2), nothing_reaches, 3).tolist() == [False] * 3


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token_truncate", [[1.5, 1.0, 1.0]]),  # 2.0 clamped at 1.5; masked token: ratio 1
        ("token_mask", [[0.0, 1.0, 1.0]]),  # 2.0 outside [0.5, 1.5]: zeroed
        ("sequence_truncate", [[1.5]]),  # exp(log 2 + 0) = 2 -> 1.5
        ("sequence_mask", [[0.0]]),
    ],
)
def test_importance_sampling_ratio_modes(mode, expected):
    old = torch.log(torch.tensor([[0.4, 0.3, 0.9]]))
    sampling = torch.log(torch.tensor([[0.2, 0.3, 0.1]]))
    mask = torch.tensor([[1, 1, 0]])
    ratio = core.importance_sampling_ratio(old, sampling, mask, mode, 0.5, 1.5)
    torch.testing.assert_close(ratio, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_importance_sampling_ratio_nan_sampling_logprob_means_no_correction():
    ratio = core.importance_sampling_ratio(
        torch.zeros(1, 2), torch.tensor([[NAN, 0.0]]), torch.ones(1, 2), "token_truncate", None, 3.0
    )
    assert ratio.tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode='tokens'"):
        core.importance_sampling_ratio(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), "tokens")
