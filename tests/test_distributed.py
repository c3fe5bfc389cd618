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


def torchrun(script: str, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
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


def test_dynamic_sampling_same_decisions_on_both_ranks(tiny_model_dir, tmp_path):
    prefix = tmp_path / "ds"
    torchrun("dynamic_sampling.py", tiny_model_dir, str(prefix))
    rank0, rank1 = (json.loads(Path(f"{prefix}.rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["processes"] == rank1["processes"] == 2
    assert rank0["decisions"] == rank1["decisions"]  # same keep/drop decisions, same gathered values
    assert rank0["metrics"] == rank1["metrics"]
    assert len(rank0["batches"]) == len(rank1["batches"]) == 2  # 4 steps, 2 steps per generation
    for b0, b1 in zip(rank0["batches"], rank1["batches"]):
        assert b0["rows"] == b1["rows"] == 6  # per_device_train_batch_size * steps_per_generation: equal shares
        assert b0["num_items_in_batch"] == b1["num_items_in_batch"] == b0["local_tokens"] + b1["local_tokens"]
        # The global batch is rank 0's rows then rank 1's: groups of 2 (spanning ranks) all carry signal.
        advantages = b0["advantages"] + b1["advantages"]
        groups = [advantages[i : i + 2] for i in range(0, len(advantages), 2)]
        assert all(max(g) - min(g) > 1e-3 for g in groups), groups
    # Each decision is the one a single process takes on the same gathered values.
    for decision in rank0["decisions"]:
        values = torch.tensor(decision["values"], dtype=torch.float64)
        assert group_keep_mask(values, num_generations=2).tolist() == decision["keep"]
    dropped = [k for d in rank0["decisions"] for k in d["keep"] if not k]
    assert dropped, "the reward makes kind 0 and 1 degenerate: some groups must have been dropped"


def test_reward_error_on_one_rank_stops_both(tiny_model_dir):
    result = torchrun("reward_fault.py", tiny_model_dir, timeout=300, check=False)
    assert result.returncode != 0
    for rank in (0, 1):
        assert (
            f"rank {rank} stopped: Reward function 'flaky' raised ConnectionError: judge unreachable" in result.stdout
        )
    assert "process 1" in result.stdout
