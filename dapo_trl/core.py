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
from collections.abc import Callable

import torch


LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")

# exp(20) ~ 4.9e8: large enough to never bind in healthy training, small enough that ratio * advantage stays finite
# (verl clamps the log-ratio to the same range).
MAX_LOG_RATIO = 20.0

PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """
    Register a per-token policy loss under `name` in `POLICY_LOSSES` (verl's `register_policy_loss` pattern).

    A policy loss takes `(log_probs, old_log_probs, advantages, mask, **options)` with `(B, T)` tensors (advantages
    `(B,)` or `(B, T)`) and an optional keyword `importance_sampling_ratio` (`(B, T)`, vLLM's sampler/trainer
    correction), and returns the `(B, T)` loss (not masked, not aggregated) and a dict of 0-dim metrics, each the
    fraction (or mean) over the masked tokens, named as TRL logs them.
    """

    def decorator(func: PolicyLoss) -> PolicyLoss:
        POLICY_LOSSES[name] = func
        return func

    return decorator


def importance_log_weights(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """
    Log importance weights `log(pi / pi_old)`: `(B, T)` per token (`level="token"`), or `(B, 1)`, the mean over each
    sequence's masked tokens (`level="sequence"`, GSPO). Log-ratios are clamped to `±MAX_LOG_RATIO`.

    Example:
    ```python
    >>> lp, old, mask = torch.tensor([[0.2, 0.4, 9.0]]), torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 0.0]])
    >>> importance_log_weights(lp, old, mask, "sequence")
    tensor([[0.3000]])

    ```
    """
    log_ratio = torch.clamp(log_probs - old_log_probs, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    if level == "token":
        return log_ratio
    if level == "sequence":
        mask = mask.to(log_ratio.dtype)
        return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    raise ValueError(f"Unknown importance sampling level {level!r}; expected one of {IMPORTANCE_SAMPLING_LEVELS}.")


def _per_token(advantages: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages


def _finish(
    loss: torch.Tensor,
    mask: torch.Tensor,
    metrics: dict[str, torch.Tensor],
    importance_sampling_ratio: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Broadcast the loss to `(B, T)`, apply vLLM's importance-sampling correction, average metrics over the mask."""
    loss = torch.broadcast_to(loss, mask.shape)
    if importance_sampling_ratio is not None:
        loss = loss * importance_sampling_ratio
    mask = mask.to(loss.dtype)
    count = mask.sum().clamp(min=1.0)
    means = {name: (value.to(loss.dtype).expand_as(mask) * mask).sum() / count for name, value in metrics.items()}
    return loss, means


@register_policy_loss("clip")
def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
    clip_ratio_c: float | None = None,
    *,
    delta: float | None = None,
    importance_sampling_level: str = "token",
    importance_sampling_ratio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    Per-token clipped surrogate loss (to minimize) with decoupled ("clip-higher") bounds, optional two-sided clipping
    and dual-clip: the loss of TRL's `grpo`, `bnpo`, `dr_grpo`, `dapo` and `luspo` (they differ in aggregation only).

    With `r = exp(log_probs - old_log_probs)` (per token, or per sequence with `importance_sampling_level="sequence"`)
    and advantage `A`, each token's loss is `max(-A * r', -A * clip(r, 1 - epsilon_low, 1 + epsilon_high))`, where
    `r' = min(r, delta)` with two-sided clipping (INTELLECT-2) and `r' = r` otherwise. With `clip_ratio_c` set, tokens
    with `A < 0` take `min(that, -A * clip_ratio_c)` (dual-clip, bounding the loss of negative samples whose ratio
    exploded).

    Args:
        log_probs (`torch.Tensor`): `(B, T)` log-probabilities of the sampled tokens under the current policy.
        old_log_probs (`torch.Tensor`): `(B, T)` log-probabilities under the policy that sampled them.
        advantages (`torch.Tensor`): `(B,)` (one per sequence) or `(B, T)` (one per token).
        mask (`torch.Tensor`): `(B, T)`, 1 for tokens that count in the loss, 0 for padding.
        epsilon_low (`float`): lower clip bound, ratio floor is `1 - epsilon_low`.
        epsilon_high (`float`): upper clip bound, ratio ceiling is `1 + epsilon_high`.
        clip_ratio_c (`float` or `None`): dual-clip bound (> 1) for negative advantages; `None` disables it.
        delta (`float` or `None`): two-sided clipping, the unclipped ratio is capped at `delta`; `None` disables it.
        importance_sampling_level (`str`): `"token"` or `"sequence"` (GSPO, see [`importance_log_weights`]).
        importance_sampling_ratio (`torch.Tensor` or `None`): `(B, T)` vLLM correction, multiplies the loss.

    Returns:
        `(per_token_loss, metrics)`: the `(B, T)` loss (not masked, not aggregated) and a dict of 0-dim tensors with
        the fraction of masked tokens clipped at the low bound (`clip_ratio/low_mean`), at the high bound
        (`clip_ratio/high_mean`) and by the dual clip (`clip_ratio/dual_mean`, only when `clip_ratio_c` is set).

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
    advantages = _per_token(advantages)
    ratio = torch.exp(importance_log_weights(log_probs, old_log_probs, mask, importance_sampling_level))
    unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = torch.maximum(-advantages * unclipped, -advantages * clipped)

    # A token is "clipped" where the clipped branch wins, i.e. its gradient is zero.
    metrics = {
        "clip_ratio/low_mean": (unclipped < 1 - epsilon_low) & (advantages < 0),
        "clip_ratio/high_mean": (unclipped > 1 + epsilon_high) & (advantages > 0),
    }
    if clip_ratio_c is not None:
        dual_bound = -advantages * clip_ratio_c
        is_dual = (advantages < 0) & (loss > dual_bound)
        loss = torch.where(is_dual, dual_bound.expand_as(loss), loss)
        metrics["clip_ratio/dual_mean"] = is_dual
    return _finish(loss, mask, metrics, importance_sampling_ratio)


@register_policy_loss("cispo")
def cispo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_high: float = 5.0,
    *,
    importance_sampling_level: str = "token",
    importance_sampling_ratio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    CISPO (MiniMax-M1): `-sg(min(r, epsilon_high)) * A * log_probs`, the importance weight is clipped (and carries
    no gradient) instead of the surrogate, so every token keeps a gradient. `epsilon_high` is the ratio cap itself
    (ScaleRL recommends 5.0), not `1 + epsilon_high`. Shapes and returns as [`policy_loss`]; metric
    `cispo_clip_ratio` (positive-advantage tokens whose weight was capped).

    Example:
    ```python
    >>> lp = torch.log(torch.tensor([[2.0, 8.0]])).requires_grad_()
    >>> loss, metrics = cispo_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    >>> torch.autograd.grad(loss.sum(), lp)[0], metrics["cispo_clip_ratio"]  # weights 2 and min(8, 5)
    (tensor([[-2., -5.]]), tensor(0.5000))

    ```
    """
    advantages = _per_token(advantages)
    ratio = torch.exp(importance_log_weights(log_probs, old_log_probs, mask, importance_sampling_level))
    weight = torch.clamp(ratio, max=epsilon_high).detach()
    loss = -weight * advantages * log_probs
    metrics = {"cispo_clip_ratio": (ratio > epsilon_high) & (advantages > 0)}
    return _finish(loss, mask, metrics, importance_sampling_ratio)


@register_policy_loss("sapo")
def sapo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    temperature_pos: float = 1.0,
    temperature_neg: float = 1.05,
    *,
    importance_sampling_level: str = "token",
    importance_sampling_ratio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    SAPO (Soft Adaptive Policy Optimization): a smooth gate instead of the hard clip,
    `-A * sigmoid(tau * (r - 1)) * 4 / tau`, with `tau = temperature_pos` where `A > 0` and `temperature_neg`
    elsewhere. Its gradient at `r = 1` is the plain policy gradient and decays away from it. Shapes and returns as
    [`policy_loss`]; no metrics.

    Example:
    ```python
    >>> lp = torch.zeros(1, 1, requires_grad=True)  # r = 1
    >>> loss, _ = sapo_loss(lp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    >>> torch.autograd.grad(loss.sum(), lp)[0]
    tensor([[-1.]])

    ```
    """
    advantages = _per_token(advantages)
    ratio = torch.exp(importance_log_weights(log_probs, old_log_probs, mask, importance_sampling_level))
    temperature = torch.where(advantages > 0, temperature_pos, temperature_neg)
    loss = -torch.sigmoid(temperature * (ratio - 1)) * 4 / temperature * advantages
    return _finish(loss, mask, {}, importance_sampling_ratio)


@torch.no_grad()
def vespo_weights(
    advantages: torch.Tensor,
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    importance_sampling_ratio: torch.Tensor | None = None,
    k_pos: float = 2.0,
    lambda_pos: float = 3.0,
    k_neg: float = 3.0,
    lambda_neg: float = 2.0,
) -> torch.Tensor:
    """
    VESPO's `(B, 1)` gamma weights `phi(w) = exp(lambda) * w^k * exp(-lambda * w)` (`phi(1) = 1`, no gradient) of the
    sequence importance weight `w = exp(sum_t log_ratio)` (times vLLM's correction when given), with `(k, lambda)`
    chosen by the sign of the advantage (`A >= 0`: the `_pos` pair). Computed in log space, `log w` clamped to
    `[log 1e-8, 20]`. Shapes: advantages `(B, 1)`, log_ratio, mask and importance_sampling_ratio `(B, T)`.

    Example:
    ```python
    >>> log_ratio = torch.tensor([[0.0, 0.0], [0.5, 0.5]])  # w = 1 and w = e
    >>> vespo_weights(torch.ones(2, 1), log_ratio, torch.ones(2, 2))  # e^3 * e^2 * e^(-3e) for the second
    tensor([[1.0000],
            [0.0426]])

    ```
    """
    floor = math.log(1e-8)
    seq_log_w = (torch.clamp(log_ratio, -MAX_LOG_RATIO, MAX_LOG_RATIO) * mask).sum(-1, keepdim=True)
    if importance_sampling_ratio is not None:
        seq_log_w = seq_log_w + torch.clamp(torch.log(importance_sampling_ratio), floor, 20.0).sum(-1, keepdim=True)
    log_w = torch.clamp(seq_log_w, floor, 20.0)
    nonneg = advantages >= 0
    k = torch.where(nonneg, k_pos, k_neg)
    lam = torch.where(nonneg, lambda_pos, lambda_neg).clamp(min=1e-4)
    log_phi = lam + k * log_w - lam * torch.exp(log_w)
    return torch.exp(log_phi).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


@register_policy_loss("vespo")
def vespo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    k_pos: float = 2.0,
    lambda_pos: float = 3.0,
    k_neg: float = 3.0,
    lambda_neg: float = 2.0,
    *,
    importance_sampling_ratio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    VESPO: `-phi(w) * A * log_probs` with the sequence-level gamma weight of [`vespo_weights`] (no hard clip).
    vLLM's `importance_sampling_ratio` enters `w` instead of multiplying the loss. Shapes and returns as
    [`policy_loss`]; metric `vespo/phi_seq_mean` (token-weighted mean of `phi`).

    Example:
    ```python
    >>> lp = torch.zeros(1, 2, requires_grad=True)  # on-policy: w = 1, phi = 1, plain policy gradient
    >>> loss, metrics = vespo_loss(lp, torch.zeros(1, 2), torch.tensor([0.5]), torch.ones(1, 2))
    >>> torch.autograd.grad(loss.sum(), lp)[0], metrics["vespo/phi_seq_mean"]
    (tensor([[-0.5000, -0.5000]]), tensor(1.))

    ```
    """
    advantages = _per_token(advantages)
    mask_f = mask.to(log_probs.dtype)
    phi = vespo_weights(
        advantages, log_probs - old_log_probs, mask_f, importance_sampling_ratio, k_pos, lambda_pos, k_neg, lambda_neg
    )
    loss = -phi * advantages * log_probs
    return _finish(loss, mask, {"vespo/phi_seq_mean": phi}, None)


# TRL's `loss_type` -> (policy loss in POLICY_LOSSES, default aggregation in LOSS_AGG_MODES).
LOSS_TYPES: dict[str, tuple[str, str]] = {
    "grpo": ("clip", "seq-mean-token-mean"),
    "bnpo": ("clip", "token-mean"),
    "dr_grpo": ("clip", "seq-mean-token-sum-norm"),
    "dapo": ("clip", "token-mean"),
    "luspo": ("clip", "seq-mean-token-sum"),
    "cispo": ("cispo", "token-mean"),
    "sapo": ("sapo", "seq-mean-token-mean"),
    "vespo": ("vespo", "token-mean"),
}


def off_policy_sequence_mask(
    advantages: torch.Tensor,
    log_probs: torch.Tensor,
    sampling_log_probs: torch.Tensor,
    mask: torch.Tensor,
    threshold: float,
) -> torch.Tensor:
    """
    DeepSeek-V3.2's off-policy sequence mask: `(B, 1)` (or `(B, T)` with per-token advantages), 0 for sequences with a
    negative advantage whose mean KL `log pi_sampling - log pi` over the masked tokens exceeds `threshold`, 1
    elsewhere. Tokens with a NaN sampling log-prob give no KL evidence (counted as 0).

    Example:
    ```python
    >>> lp, sampling = torch.zeros(2, 2), torch.full((2, 2), 0.5)  # mean KL 0.5 in both rows
    >>> off_policy_sequence_mask(torch.tensor([1.0, -1.0]), lp, sampling, torch.ones(2, 2), threshold=0.1)
    tensor([[1.],
            [0.]])

    ```
    """
    kl = torch.nan_to_num(sampling_log_probs - log_probs.detach(), nan=0.0)
    mask = mask.to(kl.dtype)
    mean_kl = (kl * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return ((_per_token(advantages) >= 0) | (mean_kl <= threshold)).to(mask.dtype)


def high_entropy_mask(
    entropies: torch.Tensor, mask: torch.Tensor, top_quantile: float, pool: torch.Tensor | None = None
) -> torch.Tensor:
    """
    `(B, T)` boolean mask of the masked tokens whose entropy is at least the `1 - top_quantile` quantile of `pool`
    (the entropies of every masked token of the batch, gathered over processes by the trainer; default: this
    batch's), as in "Beyond the 80/20 rule" (Wang et al. 2025) and TRL's `top_entropy_quantile`.

    Example:
    ```python
    >>> entropies = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    >>> high_entropy_mask(entropies, torch.tensor([[1, 1, 1, 0]]), top_quantile=0.5)  # median of .1 .9 .5 is .5
    tensor([[False,  True,  True, False]])

    ```
    """
    if pool is None:
        pool = entropies[mask.bool()].float()
    if pool.numel() == 0:
        return torch.zeros_like(entropies, dtype=torch.bool)
    threshold = torch.quantile(pool.float(), 1 - top_quantile)
    return (entropies * mask.float() >= threshold) & mask.bool()


def adaptive_entropy_coef(
    coef: float, entropy: float, target: float, step: float, coef_min: float, coef_max: float
) -> float:
    """
    Skywork-OR1's adaptive entropy control: the coefficient grows by `step` while the measured `entropy` is at or
    below `target` and shrinks by `step` otherwise, within `[coef_min, coef_max]`.

    Example:
    ```python
    >>> adaptive_entropy_coef(0.01, entropy=0.1, target=0.2, step=0.005, coef_min=0.0, coef_max=1.0)
    0.015

    ```
    """
    if entropy <= target:
        return min(coef + step, coef_max)
    return max(coef - step, coef_min)


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    seq_len: float | None = None,
    num_rows: float | None = None,
) -> torch.Tensor:
    """
    Reduce a `(B, T)` per-token loss to a scalar.

    Modes (verl's names):
    - `"token-mean"`: sum of masked token losses / number of masked tokens (DAPO: every token weighs the same).
    - `"seq-mean-token-mean"`: mean over sequences of each sequence's token mean (GRPO's original).
    - `"seq-mean-token-sum"`: mean over sequences of each sequence's token sum (LUSPO).
    - `"seq-mean-token-sum-norm"`: sum of all token losses / (rows * `seq_len`), a constant normalizer (Dr. GRPO, as
      TRL's `dr_grpo`: `seq_len` is `max_completion_length`, default `mask.shape[-1]`, and every row counts, even one
      without any masked token).

    In the other modes, sequences without any masked token do not count as sequences. The optional keyword arguments
    replace the local denominators by global ones, so a batch split over gradient-accumulation steps or processes sums
    to the same loss as the whole batch: `num_tokens` (token-mean), `num_seqs` (seq-mean-*), `seq_len` and `num_rows`
    (sum-norm).

    Example:
    ```python
    >>> import torch
    >>> loss, mask = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    >>> aggregate_loss(loss, mask, "token-mean"), aggregate_loss(loss, mask, "seq-mean-token-mean")
    (tensor(2.), tensor(2.))
    >>> aggregate_loss(loss, mask, "seq-mean-token-sum-norm")  # 6 / (2 rows * 2 columns)
    tensor(1.5000)

    ```
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"Unknown loss aggregation mode {mode!r}; expected one of {LOSS_AGG_MODES}.")
    mask = mask.to(loss_mat.dtype)
    masked = loss_mat * mask
    if mode == "token-mean":
        return masked.sum() / _denominator(num_tokens, mask.sum())
    if mode == "seq-mean-token-sum-norm":
        rows = num_rows if num_rows is not None else mask.shape[0]
        return masked.sum() / ((seq_len if seq_len is not None else mask.shape[-1]) * max(rows, 1))
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
