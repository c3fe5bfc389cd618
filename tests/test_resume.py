"""Checkpoint and resume: a resumed run with dynamic sampling continues exactly like an uninterrupted one."""

import math

import pytest

from dapo_trl import DAPOTrainer
from tests.helpers import kind_dataset, kind_reward, make_config


KEYS = (
    "loss",
    "reward",
    "entropy",
    "dynamic_sampling/rounds",
    "dynamic_sampling/groups_generated",
    "dynamic_sampling/prompts_consumed_total",
)


def history(trainer, after_step: int) -> list[dict]:
    return [
        {key: entry[key] for key in KEYS if key in entry}
        for entry in trainer.state.log_history
        if entry.get("step", 0) > after_step and "loss" in entry
    ]


@pytest.mark.parametrize("save_step", [2, 3])  # 3 falls between two generations (steps_per_generation=2)
def test_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path, save_step):
    common = dict(
        max_steps=6,
        steps_per_generation=2,
        save_strategy="steps",
        save_steps=save_step,
        learning_rate=5e-3,
        skip_memory_metrics=True,
    )
    full = DAPOTrainer(
        model=tiny_model_dir,
        reward_funcs=kind_reward,
        args=make_config(tmp_path / "full", **common),
        train_dataset=kind_dataset(),
    )
    full.train()

    resumed = DAPOTrainer(
        model=tiny_model_dir,
        reward_funcs=kind_reward,
        args=make_config(tmp_path / "resumed", **common),
        train_dataset=kind_dataset(),
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{save_step}"))

    expected, got = history(full, save_step), history(resumed, save_step)
    assert len(got) == 6 - save_step
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for key in e:
            assert math.isclose(e[key], g[key], rel_tol=1e-6, abs_tol=1e-7), (key, e, g)
