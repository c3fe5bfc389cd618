"""Pure tensor math of DAPO: no trainer state, no TRL import.

Every function here can be called alone, on any device, in any dtype; the trainer only wires them in.

Example:
```python
>>> import torch
>>> from dapo_trl.core import aggregate_loss
>>> loss = torch.tensor([[0.1, 0.2, 0.3, 0.0, 0.0], [0.4, 0.5, 0.0, 0.0, 0.0], [0.6, 0.7, 0.8, 0.9, 1.0]])
>>> mask = (loss > 0).float()
>>> round(aggregate_loss(loss, mask, "token-mean").item(), 4), round(aggregate_loss(loss, mask, "seq-mean-token-sum").item(), 4)
(0.55, 1.8333)

```
"""

from __future__ import annotations

import math

import torch


LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")

# exp(20) ~ 4.9e8: large enough to never bind in healthy training, small enough that ratio * advantage stays finite
# (verl clamps the log-ratio to the same range).
MAX_LOG_RATIO = 20.0


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
    clip_ratio_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    Per-token DAPO surrogate loss (to minimize) with decoupled ("clip-higher") bounds and optional dual-clip.

    With `r = exp(log_probs - old_log_probs)` and advantage `A`, each token's loss is
    `max(-A * r, -A * clip(r, 1 - epsilon_low, 1 + epsilon_high))`; with `clip_ratio_c` set, tokens with `A < 0`
    take `min(that, -A * clip_ratio_c)` (dual-clip, bounding the loss of negative samples whose ratio exploded).

    Args:
        log_probs (`torch.Tensor`): `(B, T)` log-probabilities of the sampled tokens under the current policy.
        old_log_probs (`torch.Tensor`): `(B, T)` log-probabilities under the policy that sampled them.
        advantages (`torch.Tensor`): `(B,)` (one per sequence) or `(B, T)` (one per token).
        mask (`torch.Tensor`): `(B, T)`, 1 for tokens that count in the loss, 0 for padding.
        epsilon_low (`float`): lower clip bound, ratio floor is `1 - epsilon_low`.
        epsilon_high (`float`): upper clip bound, ratio ceiling is `1 + epsilon_high`.
        clip_ratio_c (`float` or `None`): dual-clip bound (> 1) for negative advantages; `None` disables it.

    Returns:
        `(per_token_loss, metrics)`: the `(B, T)` loss (not masked, not aggregated) and a dict of 0-dim tensors with
        the fraction of masked tokens clipped at the low bound (`clip_ratio/low`), at the high bound
        (`clip_ratio/high`) and by the dual clip (`clip_ratio/dual`, only when `clip_ratio_c` is set).

    Example:
    ```python
    >>> import torch
    >>> lp, old = torch.log(torch.tensor([[1.25]])), torch.zeros(1, 1)
    >>> policy_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 1))[0]  # 1.25 < 1.28: not clipped
    tensor([[-1.2500]])
    >>> policy_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 1), epsilon_high=0.2)[0]  # clipped at 1.2
    tensor([[-1.2000]])

    ```
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    log_ratio = torch.clamp(log_probs - old_log_probs, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    loss = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high))

    # A token is "clipped" where the clipped branch wins, i.e. its gradient is zero.
    is_low = (ratio < 1 - epsilon_low) & (advantages < 0)
    is_high = (ratio > 1 + epsilon_high) & (advantages > 0)
    flags = {"clip_ratio/low": is_low, "clip_ratio/high": is_high}
    if clip_ratio_c is not None:
        dual_bound = -advantages * clip_ratio_c
        is_dual = (advantages < 0) & (loss > dual_bound)
        loss = torch.where(is_dual, dual_bound.expand_as(loss), loss)
        flags["clip_ratio/dual"] = is_dual

    mask = mask.to(loss.dtype)
    count = mask.sum().clamp(min=1.0)
    metrics = {name: (flag.expand_as(mask) * mask).sum() / count for name, flag in flags.items()}
    return loss, metrics


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    seq_len: float | None = None,
) -> torch.Tensor:
    """
    Reduce a `(B, T)` per-token loss to a scalar.

    Modes (verl's names):
    - `"token-mean"`: sum of masked token losses / number of masked tokens (DAPO: every token weighs the same).
    - `"seq-mean-token-mean"`: mean over sequences of each sequence's token mean (GRPO's original).
    - `"seq-mean-token-sum"`: mean over sequences of each sequence's token sum.
    - `"seq-mean-token-sum-norm"`: sum of all sequence sums / `mask.shape[-1]` (Dr. GRPO's constant normalizer).

    Sequences without any masked token do not count as sequences. The optional keyword arguments replace the
    local denominators by global ones, so a batch split over gradient-accumulation steps or processes sums to the
    same loss as the whole batch: `num_tokens` (token-mean), `num_seqs` (seq-mean-*), `seq_len` (sum-norm).

    Example:
    ```python
    >>> import torch
    >>> loss, mask = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    >>> aggregate_loss(loss, mask, "token-mean"), aggregate_loss(loss, mask, "seq-mean-token-mean")
    (tensor(2.), tensor(2.))

    ```
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"Unknown loss aggregation mode {mode!r}; expected one of {LOSS_AGG_MODES}.")
    mask = mask.to(loss_mat.dtype)
    masked = loss_mat * mask
    if mode == "token-mean":
        return masked.sum() / _denominator(num_tokens, mask.sum())
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (seq_len if seq_len is not None else mask.shape[-1])
    seq_tokens = mask.sum(-1)
    seq_loss = masked.sum(-1)
    if mode == "seq-mean-token-mean":
        seq_loss = seq_loss / seq_tokens.clamp(min=1.0)
    return seq_loss.sum() / _denominator(num_seqs, (seq_tokens > 0).sum())


def _denominator(given: float | torch.Tensor | None, local: torch.Tensor) -> torch.Tensor | float:
    # An empty batch (everything masked) has a zero numerator: dividing by 1 returns 0 instead of NaN.
    if given is None:
        return local.clamp(min=1)
    if isinstance(given, torch.Tensor):
        return torch.where(given > 0, given, torch.ones_like(given))
    return given if given > 0 else 1.0


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """
    Per-token k3 estimator of KL(pi || pi_ref): `exp(ref - logp) - (ref - logp) - 1` (>= 0), as in GRPO.

    DAPO drops the KL term (`beta=0`); this exists for users who keep one.
    """
    delta = torch.clamp(ref_log_probs - log_probs, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.exp(delta) - delta - 1


def overlong_penalty(
    lengths: torch.Tensor | list[int],
    max_completion_length: int,
    buffer_length: int,
    penalty_factor: float = 1.0,
) -> torch.Tensor:
    """
    DAPO's soft overlong punishment.

    0 for `length <= max_completion_length - buffer_length`, then linear down to `-penalty_factor` at
    `max_completion_length`, and `-penalty_factor` beyond.

    Example:
    ```python
    >>> overlong_penalty([10, 12, 14, 16, 20], max_completion_length=16, buffer_length=4)
    tensor([ 0.0000,  0.0000, -0.5000, -1.0000, -1.0000])

    ```
    """
    if not 0 < buffer_length <= max_completion_length:
        raise ValueError(
            f"buffer_length ({buffer_length}) must be in (0, max_completion_length={max_completion_length}]."
        )
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    expected = max_completion_length - buffer_length
    penalty = (expected - lengths) / buffer_length
    return penalty.clamp(min=-1.0, max=0.0) * penalty_factor


def group_keep_mask(values: torch.Tensor, num_generations: int, atol: float = 1e-6) -> torch.Tensor:
    """
    Which groups carry learning signal: `True` for a group whose values are not all equal.

    `values` is the flat `(num_groups * num_generations,)` filter metric, groups contiguous. Non-finite values
    (a reward that returned `None`, NaN or inf) are ignored; a group needs at least two finite values that differ by
    more than `atol` (tolerance for floating-point noise) to be kept.

    Example:
    ```python
    >>> group_keep_mask(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, float("nan")]), num_generations=2)
    tensor([False,  True, False, False])

    ```
    """
    values = torch.as_tensor(values)
    if values.dim() != 1 or values.numel() % num_generations != 0:
        raise ValueError(
            f"values must be a flat tensor whose length ({tuple(values.shape)}) is a multiple of num_generations "
            f"({num_generations})."
        )
    grouped = values.view(-1, num_generations).double()
    finite = torch.isfinite(grouped)
    high = torch.where(finite, grouped, -math.inf).amax(dim=1)
    low = torch.where(finite, grouped, math.inf).amin(dim=1)
    enough = finite.sum(dim=1) >= 2
    spread = torch.where(enough, high - low, torch.zeros_like(high))
    return enough & (spread > atol)


def nanstd(values: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Unbiased standard deviation ignoring NaNs (NaN with fewer than two values), as `trl.trainer.utils.nanstd`."""
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    variance = torch.nanmean((values - mean) ** 2, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    correction = torch.where(count > 1, count / (count - 1), torch.full_like(variance, math.nan))
    std = torch.sqrt(variance * correction)
    if keepdim:
        return std
    return std.squeeze(dim) if dim is not None else std.reshape(())


def group_advantages(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    num_generations: int,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Group-relative advantages of a batch of groups, TRL 1.16's formula (`GRPOTrainer._generate_and_score_completions`).

    `sum_then_normalize`: weighted sum of the rewards, minus its group mean, divided by the group std (`"group"`),
    the batch std (`"batch"`) or nothing (`"none"`), with TRL's `1e-4`. `normalize_then_sum`: each reward normalized
    in its group, weighted sum, then normalized over the batch. Rows whose rewards are all NaN (unscorable) get 0.

    Args:
        rewards_per_func (`torch.Tensor`): `(N, F)` rewards, `N = groups * num_generations`, groups contiguous.
        weights (`torch.Tensor`): `(F,)` reward weights.
        num_generations (`int`): group size.
        scale_rewards (`str`): `"group"`, `"batch"` or `"none"`.
        aggregation (`str`): `"sum_then_normalize"` or `"normalize_then_sum"`.

    Returns:
        `(advantages, is_std_zero)`, both `(N,)`; `is_std_zero` is TRL's logging flag.

    Example:
    ```python
    >>> adv, zero = group_advantages(torch.tensor([[1.0], [0.0], [1.0], [1.0]]), torch.ones(1), 2)
    >>> adv.tolist(), zero.tolist()
    ([0.7070..., -0.7070..., 0.0, 0.0], [False, False, True, True])

    ```
    """
    weights = weights.to(rewards_per_func)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    if aggregation == "normalize_then_sum":
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.size(1))
        std_k = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(grouped[:, :1])
        reward_k = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)) / (std_k + 1e-4)
        rewards = (reward_k.view(-1, rewards_per_func.size(1)) * weights).nansum(dim=1)
        rewards[unscorable] = math.nan
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    elif aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[unscorable] = math.nan
        mean = torch.nanmean(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
        if scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        elif scale_rewards in ("group", "none"):
            std = nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
        else:
            raise ValueError(f"scale_rewards={scale_rewards!r}: expected 'group', 'batch' or 'none'.")
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    else:
        raise ValueError(f"aggregation={aggregation!r}: expected 'sum_then_normalize' or 'normalize_then_sum'.")
    is_std_zero = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(advantages, nan=0.0), is_std_zero


def group_carries_gradient(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    reaches_loss: torch.Tensor,
    num_generations: int,
    aggregation: str = "sum_then_normalize",
    atol: float = 1e-6,
) -> torch.Tensor:
    """
    Which groups give a gradient: at least one row that reaches the loss has a group-relative advantage that is not 0.

    A group can pass the filter (its accuracy varies) and still carry nothing: with 0/1 accuracy and the soft overlong
    punishment, a group whose only correct completion was truncated has equal total rewards, and the truncated row is
    masked. The group-relative part is computed without scaling, so the answer does not depend on the batch.

    Args:
        rewards_per_func (`torch.Tensor`): `(N, F)` rewards, groups contiguous.
        weights (`torch.Tensor`): `(F,)` reward weights.
        reaches_loss (`torch.Tensor`): `(N,)` bool, rows with at least one loss token.
        num_generations (`int`): group size.
        aggregation (`str`): as in [`group_advantages`].
        atol (`float`): advantages within `atol` of 0 count as 0.

    Returns:
        `(N / num_generations,)` bool.

    Example:
    ```python
    >>> rewards = torch.tensor([[1.0, -1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # accuracy, overlong penalty
    >>> group_carries_gradient(rewards, torch.ones(2), torch.tensor([False, True, True, True]), 2).tolist()
    [False, True]

    ```
    """
    if aggregation == "normalize_then_sum":  # group-relative part: the combined normalized reward minus its group mean
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.size(1))
        std_k = nanstd(grouped, dim=1, keepdim=True)
        combined = (
            ((grouped - torch.nanmean(grouped, dim=1, keepdim=True)) / (std_k + 1e-4)) * weights.to(grouped)
        ).nansum(2)
        signal = combined - combined.mean(dim=1, keepdim=True)
    else:
        signal = group_advantages(rewards_per_func, weights, num_generations, "none", aggregation)[0]
        signal = signal.view(-1, num_generations)
    nonzero = (signal.abs() > atol) & reaches_loss.view(-1, num_generations).to(signal.device)
    return nonzero.any(dim=1)


def importance_sampling_ratio(
    log_probs: torch.Tensor,
    sampling_log_probs: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> torch.Tensor:
    """
    Sampler/trainer mismatch correction (vLLM), TRL 1.16's formula: `exp(log_probs - sampling_log_probs)` per token
    (`token_*`) or summed per sequence (`sequence_*`), clamped (`*_truncate`) or zeroed outside `[clip_min, clip_max]`
    (`*_mask`). Masked tokens and NaN sampling log-probs give a ratio of 1 (no correction).

    Args:
        log_probs (`torch.Tensor`): `(B, T)` log-probs of the trainer's policy (old log-probs).
        sampling_log_probs (`torch.Tensor`): `(B, T)` log-probs reported by the sampler.
        mask (`torch.Tensor`): `(B, T)` loss mask.
        mode (`str`): `token_truncate`, `token_mask`, `sequence_truncate` or `sequence_mask`.
        clip_min, clip_max (`float` or `None`): bounds (`None`: unbounded on that side).

    Returns:
        `(B, T)` for token modes, `(B, 1)` for sequence modes.

    Example:
    ```python
    >>> lp, sp = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.5]]))
    >>> importance_sampling_ratio(lp, sp, torch.ones(1, 2), "token_truncate", None, 1.5).tolist()
    [[1.5, 1.0]]

    ```
    """
    diff = torch.nan_to_num((log_probs - sampling_log_probs) * mask, nan=0.0)
    if mode in ("sequence_mask", "sequence_truncate"):
        diff = diff.sum(dim=-1, keepdim=True)
    elif mode not in ("token_mask", "token_truncate"):
        raise ValueError(
            f"vllm_importance_sampling_mode={mode!r}: expected 'token_truncate', 'token_mask', 'sequence_truncate' "
            "or 'sequence_mask'."
        )
    ratio = torch.exp(diff)
    if mode.endswith("_truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = clip_min if clip_min is not None else -math.inf
    high = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
