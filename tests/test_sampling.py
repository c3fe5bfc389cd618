"""Dynamic sampling machinery of `dapo_trl.sampling`: prompt stream, round sizing, pool of kept groups, padding."""

from __future__ import annotations

import math

import pytest
import torch

from dapo_trl.sampling import (
    GroupPool,
    PromptStream,
    RoundPlanner,
    assign_destinations,
    choose_groups,
    pad_cat,
    wire_code,
    wire_dtype,
)


# ---------------------------------------------------------------------------------------------------------------------
# PromptStream
# ---------------------------------------------------------------------------------------------------------------------


def test_stream_every_index_once_per_epoch():
    stream = PromptStream(7, seed=3)
    for _ in range(4):
        assert sorted(stream.take(7)) == list(range(7))


def test_stream_epochs_are_reshuffled():
    stream = PromptStream(20, seed=0)
    epochs = [stream.take(20) for _ in range(3)]
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_stream_deterministic_for_a_seed():
    assert PromptStream(20, seed=5).take(50) == PromptStream(20, seed=5).take(50)


def test_stream_different_seeds_differ():
    assert PromptStream(20, seed=0).take(20) != PromptStream(20, seed=1).take(20)


def test_stream_no_shuffle_is_in_order():
    stream = PromptStream(4, seed=9, shuffle=False)
    assert stream.take(10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_stream_chunked_takes_equal_one_take():
    whole = PromptStream(6, seed=2).take(20)
    stream = PromptStream(6, seed=2)
    parts = stream.take(4) + stream.take(2) + stream.take(0) + stream.take(5) + stream.take(9)
    assert parts == whole


def test_stream_crossing_epochs():
    stream = PromptStream(5, seed=0)
    first = stream.take(7)  # 5 of epoch 0, then 2 of epoch 1
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]
    rest = stream.take(3)  # the other 3 of epoch 1
    assert sorted(first[5:] + rest) == [0, 1, 2, 3, 4]
    assert stream.state_dict() == {"epoch": 1, "position": 5}


@pytest.mark.parametrize("consumed", [0, 3, 5, 8, 10, 23])
def test_stream_state_dict_resumes_exactly(consumed):
    # Includes states saved exactly at an epoch boundary (5, 10) and several epochs in (23).
    stream = PromptStream(5, seed=11)
    stream.take(consumed)
    state = stream.state_dict()
    expected = stream.take(12)
    resumed = PromptStream(5, seed=11)
    resumed.load_state_dict(state)
    assert resumed.take(12) == expected
    # loading into the same (advanced) stream rewinds it too
    stream.load_state_dict(state)
    assert stream.take(12) == expected


def test_stream_state_dict_is_plain_data():
    stream = PromptStream(5, seed=0)
    stream.take(3)
    assert stream.state_dict() == {"epoch": 0, "position": 3}


def test_stream_rejects_empty_dataset():
    with pytest.raises(ValueError):
        PromptStream(0, seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# RoundPlanner
# ---------------------------------------------------------------------------------------------------------------------


def test_planner_no_oversampling_before_any_observation():
    planner = RoundPlanner(target=8, mode="adaptive", max_oversample=2.0)
    assert planner.keep_rate is None
    assert planner.first_round_extra() == 0
    # next_round with no history assumes rate 1: ceil(4 * 1.1) = ceil(4.4) = 5
    assert planner.next_round(missing=4) == 5


def test_planner_keep_rate_is_a_running_estimate():
    planner = RoundPlanner(target=8)
    planner.observe(generated=8, kept=8)  # first observation: 1.0
    assert planner.keep_rate == 1.0
    planner.observe(generated=8, kept=0)  # decayed counts: kept 0.7 * 8 = 5.6, generated 0.7 * 8 + 8 = 13.6
    assert planner.keep_rate == pytest.approx(5.6 / 13.6)
    planner.observe(generated=4, kept=1)  # kept 0.7 * 5.6 + 1 = 4.92, generated 0.7 * 13.6 + 4 = 13.52
    assert planner.keep_rate == pytest.approx(4.92 / 13.52)
    planner.observe(generated=0, kept=0)  # nothing generated: ignored
    assert planner.keep_rate == pytest.approx(4.92 / 13.52)


def test_planner_sizes_from_keep_rate_with_margin():
    planner = RoundPlanner(target=8, mode="adaptive", max_oversample=5.0)  # max round floor(8 * 5) = 40
    planner.observe(generated=16, kept=4)  # rate 0.25
    # first round: ceil(8 / 0.25 * 1.1) = ceil(35.2) = 36 prompts in total, so 36 - 8 = 28 extra
    assert planner.first_round_extra() == 28
    # later rounds: ceil(4 / 0.25 * 1.1) = ceil(17.6) = 18; ceil(1 / 0.25 * 1.1) = ceil(4.4) = 5
    assert planner.next_round(missing=4) == 18
    assert planner.next_round(missing=1) == 5


def test_planner_rate_one_still_has_margin():
    planner = RoundPlanner(target=8, max_oversample=2.0)
    planner.observe(generated=8, kept=8)
    # ceil(8 / 1 * 1.1) = ceil(8.8) = 9: 1 extra prompt; next_round(3) = ceil(3.3) = 4
    assert planner.first_round_extra() == 1
    assert planner.next_round(missing=3) == 4


def test_planner_caps_at_max_oversample():
    planner = RoundPlanner(target=8, mode="adaptive", max_oversample=2.0)  # max round 16 prompts
    planner.observe(generated=8, kept=1)  # rate 0.125
    # first round wants ceil(8 / 0.125 * 1.1) - 8 = ceil(70.4) - 8 = 63, capped at 16 - 8 = 8
    assert planner.first_round_extra() == 8
    # next round wants ceil(8 / 0.125 * 1.1) = 71, capped at 16
    assert planner.next_round(missing=8) == 16


def test_planner_zero_keep_rate_uses_floor_and_cap():
    planner = RoundPlanner(target=8, mode="adaptive", max_oversample=3.0)  # max round 24
    planner.observe(generated=8, kept=0)  # rate 0 -> floored at min_rate 0.05
    assert planner.keep_rate == 0.0
    # ceil(2 / 0.05 * 1.1) = ceil(44.0...) >= 44, capped at 24
    assert planner.next_round(missing=2) == 24
    assert planner.first_round_extra() == 24 - 8


def test_planner_max_oversample_one_never_oversamples_first_round():
    planner = RoundPlanner(target=8, mode="adaptive", max_oversample=1.0)  # max round = target
    planner.observe(generated=8, kept=2)
    assert planner.first_round_extra() == 0
    assert planner.next_round(missing=8) == 8


def test_planner_rounds_up_to_multiple():
    planner = RoundPlanner(target=8, mode="adaptive", max_oversample=3.0, multiple=4)  # max round 24
    assert planner.next_round(missing=1) == 4  # ceil(1.1) = 2 -> 4
    planner.observe(generated=8, kept=4)  # rate 0.5
    # first round: ceil(8 / 0.5 * 1.1) - 8 = ceil(17.6) - 8 = 10 -> 12 (multiple of 4), under the cap 24 - 8 = 16
    assert planner.first_round_extra() == 12
    # ceil(3 / 0.5 * 1.1) = ceil(6.6) = 7 -> 8; ceil(5 / 0.5 * 1.1) = ceil(11.0...) >= 11 -> 12
    assert planner.next_round(missing=3) == 8
    assert planner.next_round(missing=5) == 12
    for missing in range(1, 9):
        assert planner.next_round(missing) % 4 == 0


def test_planner_max_round_is_rounded_up_to_multiple():
    planner = RoundPlanner(target=6, mode="adaptive", max_oversample=1.5, multiple=4)
    # floor(6 * 1.5) = 9 -> 12
    assert planner.max_round == 12
    planner.observe(generated=10, kept=1)  # rate 0.1: wants far more than the cap
    assert planner.next_round(missing=6) == 12


@pytest.mark.parametrize("observations", [[], [(8, 0)], [(8, 8)], [(8, 2), (16, 1)]])
def test_planner_fixed_mode_always_returns_target(observations):
    planner = RoundPlanner(target=8, mode="fixed", max_oversample=4.0, multiple=3)
    for generated, kept in observations:
        planner.observe(generated, kept)
    assert planner.first_round_extra() == 0
    for missing in (1, 4, 8):
        assert planner.next_round(missing) == 8


def test_planner_state_round_trip():
    planner = RoundPlanner(target=8, max_oversample=4.0)
    planner.observe(generated=8, kept=3)
    planner.observe(generated=12, kept=5)
    state = planner.state_dict()
    restored = RoundPlanner(target=8, max_oversample=4.0)
    restored.load_state_dict(state)
    assert restored.keep_rate == planner.keep_rate
    assert restored.first_round_extra() == planner.first_round_extra()
    assert [restored.next_round(m) for m in range(1, 9)] == [planner.next_round(m) for m in range(1, 9)]
    # a state without history restores "no history"
    fresh = RoundPlanner(target=8)
    planner.load_state_dict(fresh.state_dict())
    assert planner.keep_rate is None and planner.first_round_extra() == 0


def test_planner_margin_is_exact_when_product_is_an_integer():
    planner = RoundPlanner(target=10, mode="adaptive", max_oversample=10.0)  # max round 100
    planner.observe(generated=10, kept=2)  # rate 0.2
    # exact arithmetic: ceil(10 / 0.2 * 1.1) = ceil(55) = 55 -> 45 extra; next_round(10) = 55
    assert planner.first_round_extra() == 45
    assert planner.next_round(missing=10) == 55


# ---------------------------------------------------------------------------------------------------------------------
# GroupPool
# ---------------------------------------------------------------------------------------------------------------------


def two_round_pool():
    pool = GroupPool(num_generations=2)
    # round 0: groups [1,0] kept, [1,1] dropped (all max), [0,0] dropped (all min)
    keep0 = pool.add(torch.tensor([1.0, 0, 1, 1, 0, 0]))
    # round 1: groups [0,1] kept, [1,0] kept, [1,1] dropped (all max)
    keep1 = pool.add(torch.tensor([0.0, 1, 1, 0, 1, 1]))
    return pool, keep0, keep1


def test_pool_bookkeeping():
    pool, keep0, keep1 = two_round_pool()
    assert keep0.tolist() == [True, False, False]
    assert keep1.tolist() == [True, True, False]
    assert pool.kept == [(0, 0), (1, 0), (1, 1)]
    assert pool.dropped == [(0, 1), (0, 2), (1, 2)]
    assert pool.generated == 6
    assert pool.rounds == 2
    assert (pool.at_max, pool.at_min, pool.no_gradient) == (2, 1, 0)


def test_pool_drops_varying_groups_without_gradient_and_counts_them_apart():
    pool = GroupPool(num_generations=2)
    keep = pool.add(torch.tensor([1.0, 0, 1, 0, 1, 1]), carries_gradient=torch.tensor([True, False, True]))
    assert keep.tolist() == [True, False, False]
    assert pool.kept == [(0, 0)] and pool.dropped == [(0, 1), (0, 2)]
    assert pool.no_gradient == 1  # group 1 varies but carries nothing
    assert (pool.at_max, pool.at_min) == (1, 0)  # only the zero-variance group is classified


# ---------------------------------------------------------------------------------------------------------------------
# assign_destinations
# ---------------------------------------------------------------------------------------------------------------------


def test_assign_keeps_rows_home_while_there_is_room():
    assert assign_destinations([0, 1, 1, 0], loads=[0, 0], capacity=2) == [0, 1, 1, 0]


def test_assign_moves_only_the_overflow_lowest_rank_first():
    # rank 0 generated 5 rows, has room for 2; ranks 1 and 2 take the rest, rank 1 first
    dest = assign_destinations([0, 0, 0, 0, 0, 2], loads=[1, 0, 2], capacity=3)
    assert dest == [0, 0, 1, 1, 1, 2]
    moved = sum(o != d for o, d in zip([0, 0, 0, 0, 0, 2], dest))
    assert moved == 3  # exactly the overflow: 5 rows - 2 free slots on rank 0


def test_assign_is_minimal_for_random_layouts():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        processes, capacity = 4, 5
        loads = torch.randint(0, capacity + 1, (processes,), generator=generator).tolist()
        free = sum(capacity - load for load in loads)
        n = int(torch.randint(0, free + 1, (1,), generator=generator))
        owners = torch.randint(0, processes, (n,), generator=generator).tolist()
        dest = assign_destinations(owners, loads, capacity)
        final = [loads[k] + dest.count(k) for k in range(processes)]
        assert all(f <= capacity for f in final)
        overflow = sum(max(0, owners.count(k) - (capacity - loads[k])) for k in range(processes))
        assert sum(o != d for o, d in zip(owners, dest)) == overflow


def test_choose_takes_everything_when_not_more_than_wanted():
    assert choose_groups([[1, 1], [0, 0]], loads=[4, 4], capacity=4, wanted=2) == [0, 1]


def test_choose_prefers_groups_that_fit_at_home_then_generation_order():
    # ranks 0 and 1 are full, rank 2 has room for one group of 2: its group is taken first, then the earliest others
    owners = [[0, 0], [1, 1], [2, 2], [2, 2], [0, 1]]
    assert choose_groups(owners, loads=[4, 4, 2], capacity=4, wanted=1) == [2]
    assert choose_groups(owners, loads=[4, 4, 2], capacity=4, wanted=3) == [0, 1, 2]
    # a group spanning ranks fits only if each of its ranks has room for its rows there
    assert choose_groups([[0, 1], [1, 1]], loads=[3, 2], capacity=4, wanted=1) == [0]
    assert choose_groups([[0, 1], [1, 1]], loads=[4, 2], capacity=4, wanted=1) == [1]


def test_choose_then_assign_moves_fewer_rows_than_generation_order():
    # 4 ranks, 2 kept groups of 2 rows on each of ranks 0 and 1, none on 2 and 3, one each on 2 and 3 too
    owners = [[0, 0], [0, 0], [1, 1], [1, 1], [2, 2], [3, 3]]
    loads, capacity, wanted = [0, 0, 0, 0], 2, 4

    def moves(picked):
        rows = [rank for g in picked for rank in owners[g]]
        return sum(o != d for o, d in zip(rows, assign_destinations(rows, loads, capacity)))

    assert moves(choose_groups(owners, loads, capacity, wanted)) == 0
    assert moves(list(range(wanted))) == 4  # the first four in generation order: ranks 0 and 1 overflow


def test_assign_refuses_more_rows_than_room():
    with pytest.raises(ValueError, match="do not fit"):
        assign_destinations([0, 0, 0], loads=[1, 1], capacity=2)


def add_values(pool, values):
    return pool.add(torch.tensor(values, dtype=torch.float32))


def test_pool_at_max_at_min_single_valued_rounds():
    pool = GroupPool(num_generations=2)
    add_values(pool, [1, 1, 1, 1])  # whole round one positive value: both dropped groups are "max"
    assert (pool.at_max, pool.at_min) == (2, 0)
    add_values(pool, [0, 0, 0, 0])  # whole round at 0: "min"
    assert (pool.at_max, pool.at_min) == (2, 2)
    add_values(pool, [-1, -1])  # negative: "min"
    assert (pool.at_max, pool.at_min) == (2, 3)
    assert pool.kept == [] and len(pool.dropped) == 5


def test_pool_at_max_at_min_non_binary_and_nan():
    pool = GroupPool(num_generations=2)
    # round range [0, 1]: [0.5, 0.5] is dropped but neither max nor min; [1, nan] counts as all 1 (max);
    # [nan, nan] is dropped and unclassified; [0, 0] is min; [0, 1] is kept.
    nan = math.nan
    keep = add_values(pool, [0.5, 0.5, 1, nan, nan, nan, 0, 0, 0, 1])
    assert keep.tolist() == [False, False, False, False, True]
    assert (pool.at_max, pool.at_min) == (1, 1)
    assert len(pool.dropped) == 4
    # a round of NaN only: dropped, unclassified, no crash
    add_values(pool, [nan, nan])
    assert (pool.at_max, pool.at_min) == (1, 1)
    assert pool.generated == 6


def test_pool_atol_is_used_for_the_keep_decision():
    pool = GroupPool(num_generations=2, atol=0.1)
    keep = add_values(pool, [1.0, 1.05, 1.0, 1.5])
    assert keep.tolist() == [False, True]


def test_pool_dropped_group_counted_at_most_once():
    pool = GroupPool(num_generations=2)
    # two dropped groups whose common values differ by float noise (1e-9 < atol): both positive, so both "max"
    pool.add(torch.tensor([1.0, 1.0, 1.0 + 1e-9, 1.0 + 1e-9], dtype=torch.float64))
    assert len(pool.dropped) == 2
    assert pool.at_max + pool.at_min <= len(pool.dropped)


# ---------------------------------------------------------------------------------------------------------------------
# wire_code: the dtype a moved row travels in
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensor", "wire"),
    [
        (torch.tensor([[0, 1, 1]]), torch.uint8),  # int64 mask
        (torch.tensor([[255, 0]]), torch.uint8),
        (torch.tensor([[256, 0]]), torch.int32),  # token ids
        (torch.tensor([[-1, 151_643]]), torch.int32),  # negative ids: int32, never uint8
        (torch.tensor([[0, 1]], dtype=torch.int32), torch.uint8),
        (torch.tensor([[2**31]]), torch.int64),  # out of int32 range: its own dtype
        (torch.tensor([[70_000]], dtype=torch.int32), torch.int32),  # int32 is not narrower than int32
        (torch.tensor([[1]], dtype=torch.uint8), torch.uint8),
        (torch.tensor([[True]]), torch.bool),
        (torch.tensor([[0.0, 1.0]]), torch.float32),  # floats travel as they are (log-probs)
        (torch.zeros(0, 3, dtype=torch.int64), torch.int64),
    ],
)
def test_wire_code_narrowest_exact_dtype(tensor, wire):
    dtype = wire_dtype(wire_code(tensor), tensor.dtype)
    assert dtype == wire
    assert torch.equal(tensor.to(dtype).to(tensor.dtype), tensor)  # the receiver's cast back is exact


# ---------------------------------------------------------------------------------------------------------------------
# pad_cat
# ---------------------------------------------------------------------------------------------------------------------


def test_pad_cat_one_dimensional_is_plain_cat():
    out = pad_cat([torch.tensor([1, 2]), torch.tensor([3])], pad_value=9)
    assert out.tolist() == [1, 2, 3]


def test_pad_cat_right_and_left():
    a, b = torch.tensor([[1, 2, 3]]), torch.tensor([[4], [5]])
    assert pad_cat([a, b], pad_value=0).tolist() == [[1, 2, 3], [4, 0, 0], [5, 0, 0]]
    assert pad_cat([a, b], pad_value=-1, left=True).tolist() == [[1, 2, 3], [-1, -1, 4], [-1, -1, 5]]


def test_pad_cat_same_width_unchanged():
    a, b = torch.arange(6).view(2, 3), torch.arange(6, 9).view(1, 3)
    assert torch.equal(pad_cat([a, b], pad_value=99), torch.arange(9).view(3, 3))


def test_pad_cat_keeps_dtype_and_trailing_dims():
    a = torch.ones(1, 2, 3, dtype=torch.float64)
    b = torch.full((2, 4, 3), 2.0, dtype=torch.float64)
    out = pad_cat([a, b], pad_value=0.5)
    assert out.shape == (3, 4, 3)
    assert out.dtype == torch.float64
    assert torch.equal(out[0, :2], torch.ones(2, 3, dtype=torch.float64))
    assert torch.equal(out[0, 2:], torch.full((2, 3), 0.5, dtype=torch.float64))
    out_left = pad_cat([a, b], pad_value=0.5, left=True)
    assert torch.equal(out_left[0, 2:], torch.ones(2, 3, dtype=torch.float64))
    assert torch.equal(out_left[0, :2], torch.full((2, 3), 0.5, dtype=torch.float64))


def test_pad_cat_bool_tensors():
    a, b = torch.tensor([[True]]), torch.tensor([[True, True]])
    assert pad_cat([a, b], pad_value=False).tolist() == [[True, False], [True, True]]
