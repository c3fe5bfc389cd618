"""Launched by tests/test_distributed.py with `torchrun --nproc_per_node 2`: the reward function raises on rank 1
only; both ranks must stop with the error (no rank left waiting in a collective)."""

import sys
import tempfile

import torch.distributed as dist

from dapo_trl import DAPOTrainer
from dapo_trl.trainer import RewardFunctionError
from tests.helpers import kind_dataset, make_config, run_and_shut_down


def flaky(completions, **kwargs):
    if dist.get_rank() == 1:
        raise ConnectionError("judge unreachable")
    return [0.0] * len(completions)


def main(model_dir: str) -> None:
    args = make_config(tempfile.mkdtemp(), per_device_train_batch_size=4, max_steps=1)
    trainer = DAPOTrainer(model=model_dir, reward_funcs=flaky, args=args, train_dataset=kind_dataset())
    try:
        trainer.train()
    except RewardFunctionError as error:
        print(f"rank {dist.get_rank()} stopped: {error}", flush=True)
        sys.exit(3)
    sys.exit(0)


if __name__ == "__main__":
    run_and_shut_down(main, sys.argv[1])
