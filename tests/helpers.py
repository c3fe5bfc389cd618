"""Shared pieces of the trainer tests: datasets, rewards and a config builder for the tiny model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from datasets import Dataset

from dapo_trl import DAPOConfig


def kind_dataset(n: int = 64, conversational: bool = False) -> Dataset:
    """Prompts tagged with a `kind`: 0 always solved, 1 never solved, 2 and 3 informative (depend on the output)."""
    prompts = [f"{i % 10}+{i // 10}=" for i in range(n)]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    return Dataset.from_dict({"prompt": prompts, "kind": [i % 4 for i in range(n)]})


def kind_reward(completions, kind, **kwargs) -> list[float]:
    """1 for kind 0, 0 for kind 1; for the others, alternates inside a group so that the group carries signal."""
    return [1.0 if k == 0 else 0.0 if k == 1 else float(i % 2) for i, k in enumerate(kind)]


def constant_reward(completions, **kwargs) -> list[float]:
    return [1.0] * len(completions)


def make_config(tmp_path, **overrides) -> DAPOConfig:
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return DAPOConfig(**values)


def logged(trainer, key: str) -> list[float]:
    """Logged values of `key`, leaving out steps where it had nothing to average (None)."""
    return [entry[key] for entry in trainer.state.log_history if entry.get(key) is not None]


def load_recipe(name: str = "gsm8k"):
    """`recipes/<name>.py` as a module (a script, not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_script(script: str, *args: str, home: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`python recipes/SCRIPT ARGS...` in a fresh process as a user runs it: an empty Hugging Face cache in `home`,
    this checkout first on the path, `env` added to the environment; returns the finished process (text output)."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(root / "recipes" / script), *args]
    env = {**os.environ, "HF_HOME": str(Path(home) / "hf-home"), "PYTHONPATH": str(root), **env}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def run_and_shut_down(main, *args) -> None:
    """Run a torchrun worker's `main`, tear the process group down, and exit without interpreter finalization.

    After the work is done and its files are written, the finalization of native extensions sometimes aborts the
    process ("terminate called without an active exception", SIGABRT with no Python frame; seen about 1 run in 10 on
    2 CPU cores), which would turn a passing worker into a failed one. `os._exit` skips that teardown.
    """
    import os

    import torch.distributed as dist

    code = 0
    try:
        main(*args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
