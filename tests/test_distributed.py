"""Two real processes (torchrun, gloo on CPU): loss split invariance and dynamic sampling across ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dapo_trl.core import LOSS_TYPES, group_keep_mask


ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.distributed


def torchrun(
    script: str, *args: str, timeout: int = 600, check: bool = True, processes: int = 2
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    result = subprocess.run(
        [*command, str(ROOT / "tests" / "distributed" / script), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def test_gradient_invariant_to_process_split(tiny_model_dir, tmp_path):
    out = tmp_path / "loss.json"
    torchrun("loss_split.py", tiny_model_dir, str(out))
    results = json.loads(out.read_text())
    assert {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"} <= set(results)
    assert {f"loss_type={name}" for name in LOSS_TYPES} <= set(results)
    assert {"entropy-mask+off-policy-mask", "gspo+delta+entropy-bonus"} <= set(results)
    for mode, result in results.items():
        assert result["processes"] == 2
        assert result["relative_error"] < 1e-6, (mode, result)


@pytest.mark.parametrize("processes", [2, 4])
def test_dynamic_sampling_same_decisions_on_every_rank(tiny_model_dir, tmp_path, processes):
    prefix = tmp_path / "ds"
    torchrun("dynamic_sampling.py", tiny_model_dir, str(prefix), processes=processes)
    ranks = [json.loads(Path(f"{prefix}.rank{r}.json").read_text()) for r in range(processes)]
    assert all(r["processes"] == processes for r in ranks)
    for other in ranks[1:]:
        assert other["decisions"] == ranks[0]["decisions"]  # same keep/drop decisions, same gathered values
        assert other["metrics"] == ranks[0]["metrics"]
    assert all(len(r["batches"]) == 2 for r in ranks)  # 4 steps, 2 steps per generation
    for step in range(2):
        batches = [r["batches"][step] for r in ranks]
        assert all(b["rows"] == 6 for b in batches)  # per_device_train_batch_size * steps_per_generation
        assert len({b["num_items_in_batch"] for b in batches}) == 1
        assert batches[0]["num_items_in_batch"] == sum(b["local_tokens"] for b in batches)
        # Groups of 2 whose values vary: every trained row has a nonzero advantage (+-0.71), wherever it landed.
        advantages = [a for b in batches for a in b["advantages"]]
        assert all(abs(a) > 0.5 for a in advantages), advantages
        assert sum(a > 0 for a in advantages) == sum(a < 0 for a in advantages)  # whole groups, one of each sign
        # A rank holds its placed rows plus the round in flight: at most (1 + max_oversample) x its batch of 6 rows.
        assert all(6 <= b["peak_rows"] <= (1 + 2.0) * 6 for b in batches), [b["peak_rows"] for b in batches]
        # The main process's completions table holds exactly the trained rows of every rank, with their advantages;
        # a column one rank logged is that row's value or None, never another row's.
        table = batches[0]["table"]
        trained = sorted((row for b in batches for row in b["trained"]), key=lambda row: row[2])  # unmasked first
        assert len(table) == len(trained)
        unmatched = list(table)
        for text, advantage, masked in trained:
            match = next(
                row
                for row in unmatched
                if row[1] == pytest.approx(advantage) and (row[0].startswith(text) if masked else row[0] == text)
            )
            unmatched.remove(match)
        assert all(length in (None, len(text)) for text, _, length in table)
    # The column is logged by rank 0 in every other round only: some trained rows have it, some do not.
    assert {length is None for r in ranks[:1] for b in r["batches"] for _, _, length in b["table"]} == {True, False}
    # Each decision is the one a single process takes on the same gathered values.
    for decision in ranks[0]["decisions"]:
        values = torch.tensor(decision["values"], dtype=torch.float64)
        varies = group_keep_mask(values, num_generations=2)
        assert (varies & torch.tensor(decision["carries"])).tolist() == decision["keep"]
    dropped = [k for d in ranks[0]["decisions"] for k in d["keep"] if not k]
    assert dropped, "the reward makes kind 0 and 1 degenerate: some groups must have been dropped"


def test_reward_error_on_one_rank_stops_both(tiny_model_dir):
    result = torchrun("reward_fault.py", tiny_model_dir, timeout=300, check=False)
    assert result.returncode != 0
    for rank in (0, 1):
        assert (
            f"rank {rank} stopped: Reward function 'flaky' raised ConnectionError: judge unreachable" in result.stdout
        )
    assert "process 1" in result.stdout
