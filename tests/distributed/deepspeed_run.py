"""Launched by tests/test_deepspeed.py with `torchrun --nproc_per_node 2`: a few DAPOTrainer steps (dynamic sampling
on) under DeepSpeed ZeRO on CPU. Rank 0 writes a JSON with the losses and whether the weights moved.

    torchrun --standalone --nproc_per_node 2 tests/distributed/deepspeed_run.py MODEL_DIR DS_CONFIG.json OUT.json \
        [--via env|launcher|args]

How DeepSpeed gets enabled (`--via`):

- `env` (works on CPU): the launcher's way, `ACCELERATE_USE_DEEPSPEED=true` and `ACCELERATE_DEEPSPEED_CONFIG_FILE`
  in the environment (what `accelerate launch` with a DeepSpeed config sets), with `use_cpu=False` and
  `ddp_backend="gloo"`. The explicit backend is what makes accelerate count the 2 processes on a machine without GPU.
- `launcher`: the same, with the environment set by `accelerate launch --config_file <DeepSpeed yaml>` (ds_config `-`).
- `args`: `DAPOConfig(deepspeed=DS_CONFIG.json)`. On a machine without GPU, transformers then builds accelerate's
  state with no backend, accelerate counts 1 process while DeepSpeed sees 2, and DeepSpeed's batch assertion fails
  (`train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 8 != 8 * 1 * 2`).
"""

import argparse
import json
import os
import tempfile

import torch
import torch.distributed as dist
from datasets import Dataset

from dapo_trl import DAPOTrainer
from tests.helpers import make_config, run_and_shut_down


def reward(completions, kind, **kwargs):
    # kind 0: always 1, kind 1: always 0 (degenerate groups, dropped), others: depends on the sampled text.
    return [1.0 if k == 0 else 0.0 if k == 1 else float(len(c) % 2) for c, k in zip(completions, kind)]


def full_weights(trainer) -> dict[str, torch.Tensor]:
    """All parameters by name, gathered when ZeRO-3 partitions them."""
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    named = dict(model.named_parameters())
    if any(hasattr(p, "ds_id") for p in named.values()):  # ZeRO-3: each rank holds a shard
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(named.values()), modifier_rank=None):
            return {name: p.detach().float().clone() for name, p in named.items()}
    return {name: p.detach().float().clone() for name, p in named.items()}


def initial_weights(model_dir: str) -> dict[str, torch.Tensor]:
    """The checkpoint on disk (read directly: under ZeRO-3, `from_pretrained` would partition it)."""
    from safetensors.torch import load_file

    return {name: t.float() for name, t in load_file(os.path.join(model_dir, "model.safetensors")).items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("ds_config", help="DeepSpeed JSON config; `-` for `--via launcher`")
    parser.add_argument("out")
    parser.add_argument("--via", choices=["env", "launcher", "args"], default="env")
    parser.add_argument("--max_steps", type=int, default=3)
    cli = parser.parse_args()

    extra = {}
    if cli.via == "env":
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = cli.ds_config
        extra["ddp_backend"] = "gloo"
    elif cli.via == "launcher":  # `accelerate launch --config_file zero2.yaml` set ACCELERATE_USE_DEEPSPEED=true
        assert os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true", "launch with a DeepSpeed accelerate config"
        extra["ddp_backend"] = "gloo"
    else:
        extra["deepspeed"] = cli.ds_config
    os.environ.pop("ACCELERATE_USE_CPU", None)  # accelerate never enables DeepSpeed on a `cpu=True` state

    prompts = [f"{i % 10}+{i // 10}=" for i in range(48)]
    dataset = Dataset.from_dict({"prompt": prompts, "kind": [i % 3 for i in range(48)]})
    args = make_config(
        tempfile.mkdtemp(),
        use_cpu=False,  # there is no GPU: devices are CPU anyway, but DeepSpeed needs a non-CPU accelerate state
        per_device_train_batch_size=4,
        num_generations=4,
        steps_per_generation=2,
        max_completion_length=6,
        max_steps=cli.max_steps,
        max_num_gen_batches=20,
        learning_rate=1e-2,
        **extra,
    )
    trainer = DAPOTrainer(model=cli.model_dir, reward_funcs=reward, args=args, train_dataset=dataset)
    trainer.train()
    engine = trainer.model_wrapped
    after, before = full_weights(trainer), initial_weights(cli.model_dir)
    common = sorted(set(after) & set(before))
    accelerate_state = trainer.accelerator.state
    result = {
        "processes": trainer.accelerator.num_processes,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "distributed_type": str(accelerate_state.distributed_type),
        "deepspeed": trainer.is_deepspeed_enabled,
        "engine": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None,
        "train_batch_size": engine.train_batch_size() if hasattr(engine, "train_batch_size") else None,
        "micro_batch": engine.train_micro_batch_size_per_gpu()
        if hasattr(engine, "train_micro_batch_size_per_gpu")
        else None,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "dynamic_sampling_rounds": [
            entry["dynamic_sampling/rounds"]
            for entry in trainer.state.log_history
            if "dynamic_sampling/rounds" in entry
        ],
        "compared_tensors": len(common),
        "weights_moved": max(float((after[name] - before[name]).abs().max()) for name in common),
        "global_step": trainer.state.global_step,
    }
    if trainer.accelerator.is_main_process:
        with open(cli.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    run_and_shut_down(main)
