"""Trains the tiny model with dynamic sampling and writes the log history; can SIGKILL itself right after a
checkpoint is written, or resume from one. Used by tests/test_resume.py."""

import argparse
import json
import os
import signal

from transformers import TrainerCallback

from dapo_trl import DAPOTrainer
from tests.helpers import kind_dataset, kind_reward, make_config


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: like a preempted node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--kill-after-save", type=int)
    parser.add_argument("--resume")
    cli = parser.parse_args()
    args = make_config(
        cli.output_dir,
        max_steps=6,
        steps_per_generation=2,
        save_strategy="steps",
        save_steps=3,
        learning_rate=5e-3,
    )
    callbacks = [KillAfterSave(cli.kill_after_save)] if cli.kill_after_save else []
    trainer = DAPOTrainer(
        model=cli.model_dir, reward_funcs=kind_reward, args=args, train_dataset=kind_dataset(), callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=cli.resume)
    with open(os.path.join(cli.output_dir, "log_history.json"), "w") as f:
        json.dump(trainer.state.log_history, f)


if __name__ == "__main__":
    main()
