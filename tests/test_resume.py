"""Checkpoint and resume: a resumed run with dynamic sampling continues exactly like an uninterrupted one."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dapo_trl import DAPOTrainer
from tests.helpers import kind_dataset, kind_reward, make_config


ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    "loss",
    "reward",
    "entropy",
    "dynamic_sampling/rounds",
    "dynamic_sampling/groups_generated",
    "dynamic_sampling/prompts_consumed_total",
)


def history(log_history: list[dict], after_step: int) -> list[dict]:
    return [
        {key: entry[key] for key in KEYS if entry.get(key) is not None}  # None: nothing to average that step
        for entry in log_history
        if entry.get("step", 0) > after_step and "loss" in entry
    ]


def build(model_dir, output_dir, iterable: bool = False, **overrides) -> DAPOTrainer:
    """The trainer every resume test runs: the tiny model, the kind-tagged prompts, dynamic sampling on."""
    dataset = kind_dataset()
    return DAPOTrainer(
        model=model_dir,
        reward_funcs=kind_reward,
        args=make_config(output_dir, **overrides),
        train_dataset=dataset.to_iterable_dataset() if iterable else dataset,
    )


def assert_same_metrics(expected: list[dict], got: list[dict]) -> None:
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for key in e:
            assert math.isclose(e[key], g[key], rel_tol=1e-6, abs_tol=1e-7), (key, e, g)


@pytest.mark.parametrize(
    "save_step, iterable",
    [(2, False), (3, False), (3, True)],  # 3 falls between two generations (steps_per_generation=2); True: streaming
)
def test_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path, save_step, iterable):
    common = dict(
        max_steps=6,
        steps_per_generation=2,
        save_strategy="steps",
        save_steps=save_step,
        learning_rate=5e-3,
        skip_memory_metrics=True,
    )
    full = build(tiny_model_dir, tmp_path / "full", iterable, **common)
    full.train()

    resumed = build(tiny_model_dir, tmp_path / "resumed", iterable, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{save_step}"))

    expected, got = history(full.state.log_history, save_step), history(resumed.state.log_history, save_step)
    assert len(got) == 6 - save_step
    assert_same_metrics(expected, got)


@pytest.mark.slow
def test_sigkill_after_checkpoint_then_resume_matches(tiny_model_dir, tmp_path):
    """A process killed with SIGKILL right after writing checkpoint-3 (between two generations) resumes exactly."""
    script = [sys.executable, str(ROOT / "tests" / "scripts" / "train_until.py"), tiny_model_dir]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run([*script, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)

    full = run(str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run(str(tmp_path / "killed"), "--kill-after-save", "3")
    assert killed.returncode == -signal.SIGKILL
    checkpoint = tmp_path / "killed" / "checkpoint-3"
    assert (checkpoint / "dapo_state_rank0.pt").exists() and (checkpoint / "trainer_state.json").exists()
    resumed = run(str(tmp_path / "killed"), "--resume", str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def after(path, step):
        return history(json.loads((path / "log_history.json").read_text()), step)

    expected, got = after(tmp_path / "full", 3), after(tmp_path / "killed", 3)
    assert len(got) == 3 and len(expected) == 3
    assert_same_metrics(expected, got)


def test_resume_from_a_different_number_of_processes_keeps_shared_state(tiny_model_dir, tmp_path):
    """A checkpoint whose state says it came from 2 processes: the buffered batch is dropped (it was rank 0's half),
    the shared dynamic-sampling state is kept, and training goes on from a fresh generation batch."""
    import torch

    common = dict(max_steps=4, steps_per_generation=2, save_strategy="steps", save_steps=3, learning_rate=5e-3)
    first = build(tiny_model_dir, tmp_path / "a", **common)
    first.train()
    checkpoint = tmp_path / "a" / "checkpoint-3"
    state_file = checkpoint / "dapo_state_rank0.pt"
    state = torch.load(state_file, weights_only=False)
    assert state["processes"] == 1 and state["buffered_inputs"] is not None
    torch.save({**state, "processes": 2}, state_file)

    resumed = build(tiny_model_dir, tmp_path / "b", **common)
    with pytest.warns(UserWarning, match="different number of processes"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    totals = [
        e["dynamic_sampling/prompts_consumed_total"]
        for e in resumed.state.log_history
        if "dynamic_sampling/prompts_consumed_total" in e
    ]
    assert totals[-1] > state["prompts_total"]  # the shared counters were restored, then grew
