"""Faults in user code: reward functions that raise or return garbage give clear errors, on every process."""

import math

import pytest

from dapo_trl import DAPOTrainer
from dapo_trl.trainer import RewardFunctionError
from tests.helpers import kind_dataset, kind_reward, make_config


def build(tiny_model_dir, tmp_path, reward, **overrides):
    # Truncated rows stay in the loss: an informative group always carries gradient, so one round per generation batch
    # and the reward calls below are counted per step.
    args = make_config(tmp_path, **{"max_steps": 1, "mask_truncated_completions": False, **overrides})
    return DAPOTrainer(
        model=tiny_model_dir, reward_funcs=[kind_reward, reward], args=args, train_dataset=kind_dataset()
    )


def test_raising_reward_names_function_and_rows(tiny_model_dir, tmp_path):
    def picky(completions, kind, **kwargs):
        return [1.0 / (k - 2) for k in kind]  # ZeroDivisionError on the rows of kind 2

    trainer = build(tiny_model_dir, tmp_path, picky)
    with pytest.raises(RewardFunctionError, match=r"'picky' raised ZeroDivisionError.*rows \[") as info:
        trainer.train()
    rows = [int(r) for r in str(info.value).split("rows [")[1].split("]")[0].split(",")]
    assert rows and len(rows) % 4 == 0 and all(0 <= r < 8 for r in rows)  # whole groups of the 8-row batch
    assert "process 0" in str(info.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda completions, **kw: [1.0] * (len(completions) - 1), "values for"),
        (lambda completions, **kw: ["good"] * len(completions), "'good' \\(a str\\) at row 0"),
        (lambda completions, **kw: [math.inf] * len(completions), "inf at row 0"),
        (lambda completions, **kw: 1.0, "returned float"),
    ],
    ids=["wrong-count", "non-number", "inf", "scalar"],
)
def test_bad_reward_output_is_rejected(tiny_model_dir, tmp_path, bad, message):
    bad.__name__ = "bad_reward"
    trainer = build(tiny_model_dir, tmp_path, bad)
    with pytest.raises(RewardFunctionError, match=f"'bad_reward' .*{message}"):
        trainer.train()


def test_checkpoint_written_before_a_failure_stays_usable(tiny_model_dir, tmp_path):
    calls = {"n": 0}

    def fails_late(completions, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("reward server down")
        return [0.0] * len(completions)

    trainer = build(tiny_model_dir, tmp_path, fails_late, max_steps=4, save_strategy="steps", save_steps=1)
    with pytest.raises(RewardFunctionError, match="reward server down"):
        trainer.train()
    checkpoints = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert checkpoints
    resumed = build(
        tiny_model_dir, tmp_path / "resumed", lambda completions, **kw: [0.0] * len(completions), max_steps=4
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / checkpoints[-1]))
    assert resumed.state.global_step == 4


def test_tensor_and_numpy_rewards_are_accepted(tiny_model_dir, tmp_path):
    import numpy as np
    import torch

    def as_tensor(completions, **kwargs):
        return torch.tensor([float(len(c) % 2) for c in completions])

    def as_numpy(completions, **kwargs):
        return [np.float32(len(c) % 3 == 0) for c in completions]

    args = make_config(tmp_path, max_steps=1)
    trainer = DAPOTrainer(
        model=tiny_model_dir, reward_funcs=[as_tensor, as_numpy], args=args, train_dataset=kind_dataset()
    )
    trainer.train()
    assert trainer.state.global_step == 1


def test_row_by_row_diagnosis_logs_nothing(tiny_model_dir, tmp_path):
    def logs_then_fails(completions, log_extra=None, **kwargs):
        log_extra("note", ["x"] * len(completions))
        if len(completions) > 1:  # fails on the batch, works row by row: the diagnosis calls it per row
            raise RuntimeError("batch too large")
        return [0.0] * len(completions)

    trainer = build(tiny_model_dir, tmp_path, logs_then_fails)
    with pytest.raises(RewardFunctionError, match="batch too large"):
        trainer.train()
    assert len(trainer._pending_extra_logs["note"]) == 8  # the one real call's column, none from the diagnosis


def test_async_reward_errors_are_reported_too(tiny_model_dir, tmp_path):
    async def remote_judge(completions, **kwargs):
        raise TimeoutError("judge timed out")

    async def async_ok(completions, **kwargs):
        return [float(len(c) % 2) for c in completions]

    trainer = build(tiny_model_dir, tmp_path, async_ok)
    trainer.train()  # a working async reward still runs (through TRL's async path)
    assert trainer.state.global_step == 1
    trainer = build(tiny_model_dir, tmp_path / "failing", remote_judge)
    with pytest.raises(RewardFunctionError, match="'remote_judge' raised TimeoutError: judge timed out"):
        trainer.train()
