"""Dynamic sampling machinery, free of trainer state: the prompt stream, round sizing, and the pool of kept groups.

The trainer runs generation rounds; every rank sees the same gathered rewards (scalars), so every object here is fed
the same values on every rank and takes the same decisions there. Rows stay on the process that generated them;
only `exchange_rows` communicates, and only the rows that must change process.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch

from .core import group_keep_mask


class PromptStream:
    """
    Endless stream of dataset indices, reshuffled every epoch with a fixed seed: the same order on every rank.

    Dynamic sampling draws replacement prompts from it, so the trainer's main sampler (and its epochs) is untouched.

    Example:
    ```python
    >>> stream = PromptStream(5, seed=0)
    >>> first = stream.take(7)  # crosses into the second epoch
    >>> sorted(first[:5])
    [0, 1, 2, 3, 4]
    >>> state = stream.state_dict(); nxt = stream.take(3); stream.load_state_dict(state); stream.take(3) == nxt
    True

    ```
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        if size <= 0:
            raise ValueError("The prompt stream needs a non-empty dataset.")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        # Mixed so that (seed, epoch + 1) never replays (seed + 1, epoch).
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def take(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            step = min(n - len(out), self.size - self.position)
            out.extend(self._order[self.position : self.position + step])
            self.position += step
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation()


class IterablePromptStream:
    """
    Endless stream of rows of an iterable (streaming) dataset, for datasets that cannot be indexed: every rank
    iterates the same stream (reshuffled every epoch with a fixed seed where the dataset can shuffle), so every rank
    draws the same rows; only the rows a rank generates for are kept. Resuming skips the rows already drawn.

    Example:
    ```python
    >>> from datasets import Dataset
    >>> stream = IterablePromptStream(Dataset.from_dict({"prompt": list("abc")}).to_iterable_dataset(), seed=0)
    >>> len(stream.take(4)), stream.state_dict()["epoch"]  # crosses into the second epoch
    (4, 1)

    ```
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self.epoch, self.position = 0, 0
        self._iterator = None

    def _open(self):
        dataset = self.dataset
        if hasattr(dataset, "shuffle"):
            dataset = dataset.shuffle(seed=self.seed * 1_000_003 + self.epoch)
        self._iterator = iter(dataset)
        for _ in range(self.position):  # resume: the rows of this epoch already drawn
            next(self._iterator)

    def take(self, n: int) -> list[dict]:
        out, empty_epochs = [], 0
        while len(out) < n:
            if self._iterator is None:
                self._open()
            try:
                row = next(self._iterator)
            except StopIteration:
                empty_epochs = empty_epochs + 1 if self.position == 0 else 0
                if empty_epochs > 1:
                    raise ValueError("The prompt stream needs a non-empty dataset.") from None
                self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
                continue
            self.position += 1
            out.append(row)
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._iterator = state["epoch"], state["position"], None


class RoundPlanner:
    """
    Decides how many prompts each generation round asks for.

    `"fixed"` (verl): every extra round is one generation batch of new prompts. `"adaptive"`: the first round of a
    generation batch adds `target / keep_rate - target` prompts (so one round usually suffices) and later rounds ask
    for `missing / keep_rate`, with a 10% margin, the keep rate being a running, size-weighted estimate over past rounds. Rounds are
    capped at `max_oversample` generation batches and rounded up so that they split evenly over processes.

    Example:
    ```python
    >>> planner = RoundPlanner(target=8, mode="adaptive", max_oversample=2.0, multiple=1)
    >>> planner.first_round_extra()  # no history yet: no oversampling
    0
    >>> planner.observe(generated=8, kept=4)  # keep rate 0.5: ask for ~2x, capped at 2 batches
    >>> planner.first_round_extra(), planner.next_round(missing=4)
    (8, 9)

    ```
    """

    margin = 0.1  # ask for 10% more than the estimate says: one short round costs a whole extra round
    decay = 0.7  # weight of the past in the keep-rate estimate, per observed round
    min_rate = 0.05

    def __init__(self, target: int, mode: str = "adaptive", max_oversample: float = 2.0, multiple: int = 1):
        self.target, self.mode, self.multiple = target, mode, multiple
        self.max_round = self._round_up(max(target, math.floor(target * max_oversample)))
        # Decayed counts rather than a mean of per-round rates: a 1-group round must not weigh like a 16-group one.
        self.kept, self.generated = 0.0, 0.0

    def _round_up(self, n: int) -> int:
        return -(-n // self.multiple) * self.multiple

    @property
    def keep_rate(self) -> float | None:
        return self.kept / self.generated if self.generated > 0 else None

    def observe(self, generated: int, kept: int) -> None:
        if generated <= 0:
            return
        self.kept = self.decay * self.kept + kept
        self.generated = self.decay * self.generated + generated

    def _rate(self) -> float:
        return max(self.keep_rate if self.keep_rate is not None else 1.0, self.min_rate)

    def first_round_extra(self) -> int:
        """Prompts to add to the dataloader's generation batch in the first round."""
        if self.mode != "adaptive" or self.keep_rate is None:
            return 0
        wanted = _ceil(self.target / self._rate() * (1 + self.margin)) - self.target
        if wanted <= 0:
            return 0
        return min(self._round_up(wanted), self.max_round - self.target)

    def next_round(self, missing: int) -> int:
        """Prompts for an extra round when `missing` groups are still needed."""
        if self.mode == "fixed":
            return self.target
        wanted = _ceil(missing / self._rate() * (1 + self.margin))
        return min(self._round_up(max(wanted, missing)), self.max_round)

    def state_dict(self) -> dict:
        return {"kept": self.kept, "generated": self.generated}

    def load_state_dict(self, state: dict) -> None:
        self.kept, self.generated = state["kept"], state["generated"]


class ZeroVarianceHistory:
    """
    GRESO-style pre-rollout filter (arXiv 2506.02177): remembers which prompts last produced a zero-variance group and
    skips them with probability `1 - explore`, so prompts that are always solved (or never) stop costing rollouts
    while a few are still re-tried in case the policy changed.

    Keys are stable digests of the prompt, so the history is the same on every rank and survives a checkpoint; the
    random draws come from a seeded generator, consumed in the same order on every rank.

    Example:
    ```python
    >>> history = ZeroVarianceHistory(explore=0.0, seed=0)
    >>> history.record(["2+2="], zero_variance=[True]); history.skip("2+2="), history.skip("3+5=")
    (True, False)

    ```
    """

    def __init__(self, explore: float, seed: int):
        self.explore = explore
        self.zero_variance: dict[str, bool] = {}
        self._generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def key(prompt) -> str:
        return hashlib.blake2b(repr(prompt).encode(), digest_size=8).hexdigest()

    def record(self, prompts: list, zero_variance: list[bool]) -> None:
        for prompt, flag in zip(prompts, zero_variance):
            self.zero_variance[self.key(prompt)] = bool(flag)

    def skip(self, prompt) -> bool:
        if not self.zero_variance.get(self.key(prompt), False):
            return False
        return torch.rand((), generator=self._generator).item() >= self.explore

    def state_dict(self) -> dict:
        return {"zero_variance": dict(self.zero_variance), "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.zero_variance = dict(state["zero_variance"])
        self._generator.set_state(state["generator"])


@dataclass
class GroupPool:
    """
    Keep/drop decisions of the rounds of one generation batch, identical on every rank; it holds no rows.

    A group is kept when its filter values vary ([`~dapo_trl.core.group_keep_mask`]) and, where `carries_gradient`
    is given, at least one of its rows reaches the loss with a nonzero advantage; groups that vary but carry nothing
    are counted in `no_gradient`. Dropped zero-variance groups are classified as all at the round's maximum value
    (`at_max`, e.g. all solved) or minimum (`at_min`).

    Example:
    ```python
    >>> pool = GroupPool(num_generations=2)
    >>> pool.add(torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]), torch.tensor([True, True, False])).tolist()
    [True, False, False]
    >>> pool.kept, pool.at_max, pool.no_gradient
    ([(0, 0)], 1, 1)

    ```
    """

    num_generations: int
    atol: float = 1e-6
    kept: list[tuple[int, int]] = field(default_factory=list)  # (round, group)
    dropped: list[tuple[int, int]] = field(default_factory=list)
    rounds: int = 0
    at_max: int = 0
    at_min: int = 0
    no_gradient: int = 0

    def add(self, values: torch.Tensor, carries_gradient: torch.Tensor | None = None) -> torch.Tensor:
        """Record a round from its `(rows,)` filter values (groups contiguous); returns its keep mask per group."""
        varies = group_keep_mask(values, self.num_generations, self.atol)
        keep = varies if carries_gradient is None else varies & carries_gradient.to(varies.device)
        r, self.rounds = self.rounds, self.rounds + 1
        grouped = values.view(-1, self.num_generations).double()
        finite = torch.isfinite(grouped)
        if finite.any():
            top, bottom = grouped[finite].max(), grouped[finite].min()
        for g, (k, v) in enumerate(zip(keep.tolist(), varies.tolist())):
            if k:
                self.kept.append((r, g))
                continue
            self.dropped.append((r, g))
            if v:
                self.no_gradient += 1
                continue
            # Classify the dropped group by its common value against this round's range; when the whole round
            # holds one value, positive counts as "max" (all solved), the rest as "min".
            if not finite[g].any():
                continue
            value = grouped[g][finite[g]][0]
            if top - bottom > self.atol:
                if torch.isclose(value, top):
                    self.at_max += 1
                elif torch.isclose(value, bottom):
                    self.at_min += 1
            elif value > 0:
                self.at_max += 1
            else:
                self.at_min += 1
        return keep

    @property
    def generated(self) -> int:
        return len(self.kept) + len(self.dropped)


def assign_destinations(owners: list[int], loads: list[int], capacity: int) -> list[int]:
    """
    Deterministic, minimal-move placement of newly kept rows: the rank that generated a row keeps it while it has
    room for it (`loads[k] < capacity` rows held), the rest go to the ranks with room, lowest rank first.

    Every rank computes the same answer from the same gathered values, so no placement is communicated; the rows that
    move are exactly the overflow of each rank.

    Args:
        owners (`list[int]`): the rank holding each new row, in logical order.
        loads (`list[int]`): rows each rank already holds for the final batch.
        capacity (`int`): rows per rank in the final batch.

    Example:
    ```python
    >>> assign_destinations([0, 0, 0, 1], loads=[1, 0], capacity=3)
    [0, 0, 1, 1]

    ```
    """
    free = [capacity - load for load in loads]
    if len(owners) > sum(free):
        raise ValueError(f"{len(owners)} rows do not fit in the {sum(free)} free slots.")
    dest, overflow = [0] * len(owners), []
    for i, owner in enumerate(owners):
        if free[owner] > 0:
            dest[i], free[owner] = owner, free[owner] - 1
        else:
            overflow.append(i)
    rank = 0
    for i in overflow:
        while free[rank] == 0:
            rank += 1
        dest[i], free[rank] = rank, free[rank] - 1
    return dest


def choose_groups(owners: list[list[int]], loads: list[int], capacity: int, wanted: int) -> list[int]:
    """
    Which of a round's kept groups to train on when more were kept than are `wanted`: first, in generation order, the
    groups whose rows all fit on the ranks that generated them, then the others in generation order. Every rank
    computes the same choice; it depends on where groups were generated (prompts are shuffled over ranks), never on
    their content or length, so it does not bias the batch the way taking the first finished groups would.

    Args:
        owners (`list[list[int]]`): for each kept group, the rank holding each of its rows.
        loads (`list[int]`): rows each rank already holds for the final batch.
        capacity (`int`): rows per rank in the final batch.
        wanted (`int`): how many groups to choose.

    Returns:
        The chosen positions in `owners`, in generation order.

    Example:
    ```python
    >>> choose_groups([[0, 0], [0, 0], [1, 1]], loads=[2, 0], capacity=4, wanted=2)  # rank 0 has room for one
    [0, 2]

    ```
    """
    if len(owners) <= wanted:
        return list(range(len(owners)))
    free = [capacity - load for load in loads]
    home, away = [], []
    for g, ranks in enumerate(owners):
        need = {rank: ranks.count(rank) for rank in ranks}
        if len(home) < wanted and all(free[rank] >= n for rank, n in need.items()):
            home.append(g)
            for rank, n in need.items():
                free[rank] -= n
        else:
            away.append(g)
    return sorted(home + away[: wanted - len(home)])


# Narrower dtypes a row tensor may travel in between processes (code i + 1; code 0: its own dtype), on NCCL and gloo.
WIRE_DTYPES = (torch.uint8, torch.int32)


def wire_code(tensor: torch.Tensor) -> int:
    """
    The code of the narrowest of `WIRE_DTYPES` that holds every value of `tensor` exactly (token ids: int32, 0/1
    masks: uint8), or 0 for its own dtype (floats, bool, empty, values out of range). The sender announces it, so the
    receiver allocates the narrow buffer and casts back: what arrives is bit-identical to what was sent.

    Example:
    ```python
    >>> wire_code(torch.tensor([[1, 0]])), wire_code(torch.tensor([151_643])), wire_code(torch.tensor([0.5]))
    (1, 2, 0)
    >>> wire_dtype(1, torch.int64), wire_dtype(0, torch.int64)
    (torch.uint8, torch.int64)

    ```
    """
    dtype = tensor.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool or not tensor.numel():
        return 0
    low, high = int(tensor.min()), int(tensor.max())
    for code, wire in enumerate(WIRE_DTYPES, 1):
        if wire.itemsize < dtype.itemsize and torch.iinfo(wire).min <= low and high <= torch.iinfo(wire).max:
            return code
    return 0


def wire_dtype(code: int, dtype: torch.dtype) -> torch.dtype:
    """The dtype `wire_code` announced as `code` for a tensor of `dtype`."""
    return WIRE_DTYPES[code - 1] if code else dtype


def exchange_rows(
    outgoing: dict[int, dict[str, torch.Tensor]], incoming: dict[int, dict[str, tuple]], device
) -> dict[int, dict[str, torch.Tensor]]:
    """
    Point-to-point transfer of the rows that change process: `outgoing[dst][key]` is sent to rank `dst`, and
    `incoming[src][key] = (shape, dtype)` announces what rank `src` sends here (both sides computed the same plan,
    so no sizes travel). One batched call (`batch_isend_irecv`: grouped on NCCL, isend/irecv pairs on gloo); a rank
    with nothing to move makes no call. Keys are sent in sorted order on both sides so the messages pair up.
    """
    received, ops = {}, []
    for src in sorted(incoming):
        received[src] = {}
        for key in sorted(incoming[src]):
            shape, dtype = incoming[src][key]
            buffer = torch.empty(shape, dtype=dtype, device=device)
            received[src][key] = buffer
            ops.append(torch.distributed.P2POp(torch.distributed.irecv, buffer, src))
    for dst in sorted(outgoing):
        for key in sorted(outgoing[dst]):
            ops.append(torch.distributed.P2POp(torch.distributed.isend, outgoing[dst][key].contiguous(), dst))
    if ops:
        for request in torch.distributed.batch_isend_irecv(ops):
            request.wait()
    return received


def _ceil(x: float) -> int:
    # Round first: 10 / 0.2 * 1.1 is 55.000000000000007 in floating point, which must not ask for a 56th prompt.
    return math.ceil(round(x, 9))


def pad_cat(tensors: list[torch.Tensor], pad_value: float = 0, left: bool = False) -> torch.Tensor:
    """Concatenate along dim 0, padding dim 1 (if any) to the longest, on the left or the right."""
    if tensors[0].dim() < 2:
        return torch.cat(tensors)
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        missing = width - t.shape[1]
        if missing:
            fill = t.new_full((t.shape[0], missing, *t.shape[2:]), pad_value)
            t = torch.cat([fill, t] if left else [t, fill], dim=1)
        padded.append(t)
    return torch.cat(padded)
