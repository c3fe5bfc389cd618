"""The accelerate configs in recipes/accelerate/ load with accelerate's own loader and say what their names promise."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate"

# name: (distributed_type, num_processes, zero_stage, offload device of the optimizer / the parameters)
EXPECTED = {
    "single_gpu": (DistributedType.NO, 1, None, None, None),
    "multi_gpu": (DistributedType.MULTI_GPU, 8, None, None, None),
    "zero1": (DistributedType.DEEPSPEED, 8, 1, "none", "none"),
    "zero2": (DistributedType.DEEPSPEED, 8, 2, "none", "none"),
    "zero3": (DistributedType.DEEPSPEED, 8, 3, "none", "none"),
    "zero3_offload": (DistributedType.DEEPSPEED, 8, 3, "cpu", "cpu"),
}
DEEPSPEED = [name for name, expected in EXPECTED.items() if expected[2] is not None]


def test_every_config_is_checked():
    assert {path.stem for path in CONFIGS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_config_loads(name):
    path = CONFIGS / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config == ClusterConfig.from_yaml_file(str(path))
    distributed_type, num_processes, stage, offload_optimizer, offload_param = EXPECTED[name]
    assert config.distributed_type == distributed_type
    assert config.num_processes == num_processes
    assert config.num_machines == 1
    assert config.mixed_precision == "bf16"
    assert config.use_cpu is False
    text = path.read_text()
    assert text.startswith("#") and f"accelerate launch --config_file recipes/accelerate/{name}.yaml" in text
    if stage is None:
        assert not config.deepspeed_config
        return
    ds = config.deepspeed_config
    assert ds["zero_stage"] == stage
    assert ds["zero3_init_flag"] is (stage == 3)
    assert ds.get("offload_optimizer_device", "none") == offload_optimizer
    assert ds.get("offload_param_device", "none") == offload_param
    # Left to DAPOConfig ("auto"): a fixed value here would clash with --gradient_accumulation_steps.
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds


def _launcher_env(config, monkeypatch) -> None:
    """The environment `accelerate launch --config_file` gives the training processes (see prepare_deepspeed_cmd_env)."""
    ds = config.deepspeed_config
    env = {
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_MIXED_PRECISION": config.mixed_precision,
        "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(ds["zero_stage"]),
        "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": ds.get("offload_optimizer_device", "none"),
        "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": ds.get("offload_param_device", "none"),
        "ACCELERATE_DEEPSPEED_ZERO3_INIT": str(ds["zero3_init_flag"]).lower(),
        "ACCELERATE_CONFIG_DS_FIELDS": ",".join(ds).lower(),
    }
    if "zero3_save_16bit_model" in ds:
        env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] = str(ds["zero3_save_16bit_model"]).lower()
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
@pytest.mark.parametrize("name", DEEPSPEED)
def test_deepspeed_plugin_accepts_config(name, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    _launcher_env(config, monkeypatch)
    plugin = DeepSpeedPlugin()  # reads the ACCELERATE_DEEPSPEED_* variables, as in the launched processes
    plugin.set_mixed_precision(config.mixed_precision)
    ds_config = plugin.deepspeed_config
    _, _, stage, offload_optimizer, offload_param = EXPECTED[name]
    assert plugin.zero_stage == stage
    assert ds_config["zero_optimization"]["stage"] == stage
    assert ds_config["zero_optimization"]["offload_optimizer"]["device"] == offload_optimizer
    assert ds_config["zero_optimization"]["offload_param"]["device"] == offload_param
    assert ds_config["bf16"]["enabled"] is True
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert ds_config[key] == "auto"  # filled from DAPOConfig by transformers
    # DeepSpeed's own parser on the completed config (what the Trainer fills in for 8 processes, 1 accumulation step).
    filled = {**ds_config, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1}
    filled.update(gradient_clipping=1.0, train_batch_size=4)
    parsed = DeepSpeedConfig(filled)  # world size 1 here (no process group)
    assert parsed.zero_optimization_stage == stage
    assert (
        parsed.zero_config.offload_optimizer is None
        or parsed.zero_config.offload_optimizer.device == offload_optimizer
    )
    assert parsed.bfloat16_config.enabled


@pytest.mark.distributed
def test_accelerate_launch_cpu_starts_one_process(tmp_path):
    """`accelerate launch --cpu --num_processes 2` runs the script once (simple launcher, no mpirun): use torchrun, or
    a config with `use_cpu: false` whose launcher is torchrun (multi-GPU / DeepSpeed) and `ddp_backend="gloo"`."""
    script = tmp_path / "count.py"
    script.write_text(
        "import os\nfrom accelerate import PartialState\n"
        "state = PartialState()\n"
        "open(os.environ['OUT'] + '.' + str(os.getpid()), 'w').write(str(state.num_processes))\n"
    )
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    result = subprocess.run([*command, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = [path.read_text() for path in tmp_path.glob("out.*")]
    assert outputs == ["1"]
