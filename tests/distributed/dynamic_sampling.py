"""Launched by tests/test_distributed.py with `torchrun --nproc_per_node 2` (and 4): dynamic sampling with groups that
span ranks (3 rows per rank, 2 generations per prompt). Each rank writes what it decided and what it trained on."""

import json
import os
import sys
import tempfile

from datasets import Dataset

from dapo_trl import DAPOTrainer
from dapo_trl.sampling import GroupPool
from tests.helpers import make_config, run_and_shut_down


calls = []


def reward(completions, kind, log_extra, **kwargs):
    # kind 0: always 1, kind 1: always 0, others: depends on the sampled text (same value on every rank).
    calls.append(len(completions))  # one call per round on every rank
    if os.environ["RANK"] == "0" and len(calls) % 2:  # a column one rank logs, every other round (else: none)
        log_extra("length", [len(c) for c in completions])
    return [1.0 if k == 0 else 0.0 if k == 1 else float(len(c) % 2) for c, k in zip(completions, kind)]


class RecordingTrainer(DAPOTrainer):
    record: list

    def _dynamic_sampling(self, inputs):
        local = super()._dynamic_sampling(inputs)
        rows = local["completion_ids"].size(0) * self.accelerator.num_processes
        table = [list(self._logs[key])[-rows:] for key in ("completion", "advantages")]
        self.record.append(
            {
                # Masked (truncated) rows may have lost padding-trimmed tail columns: their text is a prefix.
                "trained": [
                    [self.processing_class.decode(ids, skip_special_tokens=True), advantage, not any(mask)]
                    for ids, advantage, mask in zip(
                        local["completion_ids"].tolist(),
                        local["advantages"].tolist(),
                        local["completion_mask"].tolist(),
                    )
                ],
                "table": [list(row) for row in zip(*table, list(self._logs["extra"]["length"])[-rows:])],
                "rows": local["completion_ids"].size(0),
                "advantages": local["advantages"].tolist(),
                "num_items_in_batch": int(local["num_items_in_batch"]),
                "local_tokens": int(local["completion_mask"].sum()),
                "moved": self._metrics["train"]["dynamic_sampling/rows_moved_frac"][-1],
                "peak_rows": self._held_peak["rows"],
            }
        )
        return local


def main(model_dir: str, out_prefix: str) -> None:
    decisions = []
    original_add = GroupPool.add

    def add(self, values, carries_gradient=None):
        keep = original_add(self, values, carries_gradient)
        decisions.append(
            {
                "keep": keep.tolist(),
                "values": [round(v, 6) for v in values.tolist()],
                "carries": carries_gradient.tolist(),
            }
        )
        return keep

    GroupPool.add = add
    prompts = [f"{i % 10}+{i // 10}=" for i in range(48)]
    dataset = Dataset.from_dict({"prompt": prompts, "kind": [i % 3 for i in range(48)]})
    args = make_config(
        tempfile.mkdtemp(),
        per_device_train_batch_size=3,
        num_generations=2,
        steps_per_generation=2,
        max_completion_length=6,
        max_steps=4,
        max_num_gen_batches=20,
        log_completions=True,
    )
    trainer = RecordingTrainer(model=model_dir, reward_funcs=reward, args=args, train_dataset=dataset)
    trainer.record = []
    trainer.train()
    rank = trainer.accelerator.process_index
    metrics = [
        {k: v for k, v in entry.items() if k.startswith("dynamic_sampling/")}
        for entry in trainer.state.log_history
        if "dynamic_sampling/rounds" in entry
    ]
    with open(f"{out_prefix}.rank{rank}.json", "w") as f:
        json.dump(
            {
                "processes": trainer.accelerator.num_processes,
                "decisions": decisions,
                "batches": trainer.record,
                "metrics": metrics,
            },
            f,
        )


if __name__ == "__main__":
    run_and_shut_down(main, sys.argv[1], sys.argv[2])
