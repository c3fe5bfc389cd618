"""DAPOTrainer under DeepSpeed ZeRO-2 / ZeRO-3 with two CPU processes (gloo), launched by torchrun and by accelerate.

What makes DeepSpeed run on a machine without GPU (see recipes/accelerate/README.md):
- no `use_cpu=True` / `ACCELERATE_USE_CPU`: accelerate never enables DeepSpeed on a `cpu=True` state;
- DeepSpeed enabled through the environment (`ACCELERATE_USE_DEEPSPEED=true`, as `accelerate launch` sets it) and
  `ddp_backend="gloo"`: without an explicit backend, accelerate counts 1 process while DeepSpeed sees 2, and
  DeepSpeed's batch assertion fails (`test_deepspeed_argument_without_gpu_hits_batch_assertion`).
The first DeepSpeed run on a machine JIT-compiles DeepSpeed's shared-memory CPU collective (a C++ compiler and ninja
are needed; ~2 minutes on 2 cores, then cached under ~/.cache/torch_extensions).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


pytest.importorskip(
    "deepspeed", reason="deepspeed is not installed (CPU: `DS_BUILD_OPS=0 pip install -e '.[deepspeed]'`)"
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed" / "deepspeed_run.py"
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def cpu_zero_config(path: Path, stage: int) -> str:
    """A DeepSpeed config for CPU: fp32, batch sizes and accumulation left to DAPOConfig ("auto")."""
    config = {
        "zero_optimization": {"stage": stage},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
    }
    path.write_text(json.dumps(config))
    return str(path)


def run(command: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return run([*command, str(SCRIPT), *args])


def check_training(result: subprocess.CompletedProcess, out: Path, stage: int) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    report = json.loads(out.read_text())
    assert report["deepspeed"] and report["engine"] == "DeepSpeedEngine"
    assert report["distributed_type"] == "DistributedType.DEEPSPEED"
    assert report["processes"] == report["world_size"] == 2 and report["backend"] == "gloo"
    assert report["zero_stage"] == stage
    assert report["train_batch_size"] == report["micro_batch"] * 2  # per_device_train_batch_size, 2 processes
    assert report["global_step"] == 3 and len(report["losses"]) == 3
    assert all(abs(loss) < 100 for loss in report["losses"])
    assert report["dynamic_sampling_rounds"] and max(report["dynamic_sampling_rounds"]) > 1  # groups were dropped
    assert report["compared_tensors"] > 0 and report["weights_moved"] > 1e-4
    return report


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_trains_on_two_cpu_processes(tiny_model_dir, tmp_path, stage):
    out = tmp_path / "out.json"
    result = torchrun(tiny_model_dir, cpu_zero_config(tmp_path / "ds.json", stage), str(out), "--via", "env")
    check_training(result, out, stage)


def test_accelerate_launch_with_recipe_config(tiny_model_dir, tmp_path):
    """recipes/accelerate/zero2.yaml with CPU overrides (fp32, 2 processes): accelerate's DeepSpeed launcher is
    torchrun, so 2 processes start, and DeepSpeed's settings reach them through the environment."""
    out = tmp_path / "out.json"
    config = ROOT / "recipes" / "accelerate" / "zero2.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0"]
    result = run([*command, str(SCRIPT), tiny_model_dir, "-", str(out), "--via", "launcher"])
    check_training(result, out, 2)


def test_deepspeed_argument_without_gpu_fails_with_a_clear_message(tiny_model_dir, tmp_path):
    """`DAPOConfig(deepspeed=...)` on a machine without GPU: transformers builds accelerate's state without a backend,
    accelerate then counts 1 process while DeepSpeed's process group has 2 (DeepSpeed would later stop at its batch
    assertion, `4 != 4 * 1 * 2`). DAPOTrainer refuses it at construction with the workaround. Pinned so that a fix
    upstream shows up here."""
    out = tmp_path / "out.json"
    result = torchrun(tiny_model_dir, cpu_zero_config(tmp_path / "ds.json", 2), str(out), "--via", "args")
    if result.returncode == 0:
        pytest.fail("DAPOConfig(deepspeed=...) now works on CPU: update recipes/accelerate/README.md and this test")
    assert "accelerate sees 1 process(es) but torch.distributed has 2" in result.stderr, result.stderr[-6000:]
    assert "ddp_backend='gloo'" in result.stderr
