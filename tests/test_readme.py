"""The README's Quick-usage snippet runs as written, offline: the tiny model and a GSM8K-layout dataset stand in for
the Hub ones, through the same calls (`DAPOTrainer(model=<id>)`, `load_dataset("openai/gsm8k", ...)`)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import datasets
import pytest
import torch

import dapo_trl
from dapo_trl.config import DAPOConfig
from dapo_trl.testing import save_tiny_model


README = Path(__file__).resolve().parents[1] / "README.md"
HUB_MODEL = '"Qwen/Qwen2.5-0.5B-Instruct"'
# GSM8K's layout (question, worked answer ending in "#### n"), with characters the tiny tokenizer knows.
GSM8K_ROWS = {
    "question": [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
        "clips did Natalia sell altogether in April and May?",
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she "
        "earn?",
    ]
    * 4,
    "answer": [
        "Natalia sold 48/2 = 24 clips in May.\n48+24 = 72\n#### 72",
        "12/60 = 0.2 per minute.\n0.2*50 = 10\n#### 10",
    ]
    * 4,
}


def quick_usage_code() -> str:
    section = README.read_text(encoding="utf-8").split("## Quick usage", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# Every run is shorter than the snippet's: 2 steps, and one generation round (a random model solves nothing, so
# dynamic sampling would resample every group up to its cap). The default run also generates 32 tokens instead of
# 256: the random stand-in never stops early, and 256-token rollouts take minutes on a loaded 2-core machine.
SHORT = {"max_steps": 2, "max_num_gen_batches": 1}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({**SHORT, "max_completion_length": 32, "overlong_buffer_length": 8}, id="short-completions"),
        pytest.param(SHORT, id="as-written", marks=pytest.mark.slow),
    ],
)
def test_quick_usage_snippet_runs_offline(overrides, tmp_path, monkeypatch, caplog):
    code = quick_usage_code()
    assert HUB_MODEL in code and 'load_dataset("openai/gsm8k", "main", split="train")' in code
    tiny = save_tiny_model(tmp_path / "tiny-model", max_position_embeddings=512)
    calls = []

    def load_gsm8k(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(GSM8K_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", load_gsm8k)
    monkeypatch.setattr(dapo_trl, "DAPOConfig", lambda **kw: DAPOConfig(**{**kw, **overrides}))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with caplog.at_level("WARNING", logger="dapo_trl.config"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code.replace(HUB_MODEL, repr(tiny)), f"{README}:Quick usage", "exec"), namespace)
    noise = [
        str(w.message) for w in caught if "gradient_checkpointing" in str(w.message) or "pin_memory" in str(w.message)
    ]
    assert noise == []  # nothing a user of the snippet cannot act on

    trainer = namespace["trainer"]
    assert calls == [("openai/gsm8k", "main", "train")]
    assert trainer.args.num_generations == 8 and trainer.args.steps_per_generation == 4  # the snippet's values
    assert trainer.state.global_step == 2 and any("policy_loss" in entry for entry in trainer.state.log_history)
    if not torch.cuda.is_available():  # this machine: fp32 on the CPU, said in one line, instead of an error
        assert trainer.args.bf16 is False
        assert [r.getMessage() for r in caplog.records if "fp32" in r.getMessage()] == [
            "dapo_trl: no CUDA GPU with bf16 found: training in fp32 on the CPU (bf16=True to insist)."
        ]


def test_quick_usage_numbers_are_sane_for_a_first_run():
    namespace: dict = {}
    code = quick_usage_code()
    config_call = code[code.index("args = DAPOConfig(") : code.index("trainer = ")]
    exec("from dapo_trl import DAPOConfig\n" + config_call.replace("DAPOConfig(", "dict(", 1), namespace)
    values = namespace["args"]
    assert 0 < values["max_steps"] <= 500  # a first run ends, and says so
    assert values["max_completion_length"] <= 512  # GSM8K solutions fit; 1024 tokens per completion is for later
    assert values["steps_per_generation"] > 1  # off-policy updates: otherwise clip-higher never acts
    assert values["overlong_buffer_length"] < values["max_completion_length"]
    assert values["logging_steps"] <= 10
