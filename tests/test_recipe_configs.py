"""The shipped recipe configs parse with the recipe's own parser and follow DAPO's setup."""

from pathlib import Path

import pytest

from tests.helpers import load_recipe


ROOT = Path(__file__).resolve().parents[1]
# The DAPO-Math configs (recipes/dapo_math.py) are checked in tests/test_dapo_math.py.
CONFIGS = sorted(p for p in (ROOT / "recipes" / "configs").glob("*.yaml") if not p.name.startswith("dapo-math"))


def test_configs_exist():
    assert {path.name for path in CONFIGS} >= {"qwen2.5-0.5b-lora.yaml", "qwen2.5-7b-zero3.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses_and_follows_dapo(path, monkeypatch):
    text = path.read_text()
    assert "# Hardware:" in text and "# Launch:" in text
    recipe = load_recipe()
    # bf16 is validated against the machine; the configs target GPUs, this test runs anywhere.
    monkeypatch.setattr("transformers.training_args.TrainingArguments._validate_args", lambda self: None)
    monkeypatch.setattr("dapo_trl.config.is_torch_bf16_gpu_available", lambda: True)  # DAPOConfig's own bf16 check
    script_args, training_args, model_args = recipe.parse_args(["--config", str(path)])
    assert script_args.dataset_name == "openai/gsm8k"
    assert model_args.model_name_or_path.startswith("Qwen/")
    assert (training_args.epsilon, training_args.epsilon_high, training_args.beta) == (0.2, 0.28, 0.0)
    assert training_args.dynamic_sampling and training_args.loss_agg_mode == "token-mean"
    # several optimizer updates per rollout batch: otherwise the ratio is 1 and clip-higher never acts
    assert training_args.steps_per_generation >= 4 * training_args.gradient_accumulation_steps
    assert training_args.push_to_hub is False
