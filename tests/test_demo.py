"""The GSM8K demo: answer extraction and the correctness reward, the built-in arithmetic task, and the tiny recipe."""

import importlib.util
import json
import pathlib
import sys

import pytest

from dapo_trl.data import arithmetic_dataset, arithmetic_problem, arithmetic_splits, gsm8k_to_conversational
from dapo_trl.rewards import extract_answer, gsm8k_accuracy


RECIPE = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "gsm8k.py"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48/2 = 24\nShe sold 48+24 = 72 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("####  $18", "18"),
        ("#### -5", "-5"),
        ("#### 5.0", "5"),
        ("#### 0.50", "0.5"),
        ("So the total is \\boxed{42}.", "42"),
        ("\\boxed{\\$1,000}", "1000"),
        ("3 apples then \\boxed{-7} and 9 more words", "-7"),
        ("The answer is 12 apples.", "12"),
        ("the answer is: $3,000.", "3000"),
        ("Then 4+5=9, so 9 eggs.", "9"),
        ("It costs $2.50.", "2.5"),
        ("It weighs 18kg.", "18"),
        ("The temperature is -3 degrees.", "-3"),
        ("The answer is 7. Check: 3+4=7 and then 100.", "7"),
        ("#### 8\nThe answer is 9", "8"),  # `####` first
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("completion", "gold", "reward"),
    [
        ("12+7=19\n#### 19", "12+7=19\n#### 19", 1.0),
        ("12+7=19\n#### 19", "19", 1.0),
        ("12+7=19\n#### 19", 19, 1.0),
        ("The answer is 19.0", 19, 1.0),
        ("\\boxed{1,200}", "She earns 1200\n#### 1,200", 1.0),
        ("It costs $5.", "#### 5", 1.0),
        ("12+7=20\n#### 20", "#### 19", 0.0),
        ("#### -4", "4", 0.0),
        ("I do not know", "#### 3", 0.0),
        ("#### 2.5", 2.5, 1.0),
    ],
)
def test_gsm8k_accuracy_plain_and_conversational(completion, gold, reward):
    assert gsm8k_accuracy([completion], answer=[gold]) == [reward]
    conversational = [[{"role": "assistant", "content": completion}]]
    assert gsm8k_accuracy(conversational, answer=[gold]) == [reward]


def test_gsm8k_accuracy_batch_uses_last_message():
    completions = [
        [{"role": "assistant", "content": "#### 1"}, {"role": "assistant", "content": "#### 2"}],
        "#### 3",
    ]
    assert gsm8k_accuracy(completions, answer=["#### 2", "#### 4"], prompts=["p", "q"]) == [1.0, 0.0]


def test_arithmetic_problem_is_correct():
    import random

    rng = random.Random(0)
    for _ in range(200):
        question, solution = arithmetic_problem(rng, num_terms=3, max_value=20)
        assert solution.splitlines()[-1] == f"#### {eval(question.rstrip('='))}"


def test_arithmetic_dataset_deterministic_and_correct():
    first, second = arithmetic_dataset(50, seed=3), arithmetic_dataset(50, seed=3)
    assert first["question"] == second["question"] and first["answer"] == second["answer"]
    assert arithmetic_dataset(50, seed=4)["question"] != first["question"]
    assert len(set(first["question"])) == 50
    for row in first:
        assert row["prompt"] == [{"role": "user", "content": row["question"]}]
        assert row["answer"].splitlines()[-1] == f"#### {eval(row['question'].rstrip('='))}"
        assert gsm8k_accuracy([row["answer"]], answer=[row["answer"]]) == [1.0]


def test_arithmetic_splits_disjoint():
    splits = arithmetic_splits(n_train=500, n_test=200, seed=0, max_value=9)
    assert len(splits["train"]) == 500 and len(splits["test"]) == 200
    assert not set(splits["train"]["question"]) & set(splits["test"]["question"])
    with pytest.raises(ValueError):
        arithmetic_dataset(10, num_terms=2, max_value=2)  # only 9 distinct problems


def test_chat_template_renders_prompt():
    from dapo_trl.testing import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    prompt = arithmetic_dataset(1)[0]["prompt"]
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text == f"u:{prompt[0]['content']}\na:"


def test_gsm8k_to_conversational():
    from datasets import Dataset

    dataset = gsm8k_to_conversational(Dataset.from_dict({"question": ["2+2?"], "answer": ["2+2=4\n#### 4"]}))
    assert dataset[0]["prompt"][-1] == {"role": "user", "content": "2+2?"}
    assert dataset[0]["answer"] == "2+2=4\n#### 4"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("gsm8k_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_recipe_tiny_smoke(tmp_path):
    recipe = _load_recipe()
    metrics = recipe.main(
        [
            "--preset", "tiny",
            "--output_dir", str(tmp_path),
            "--sft_steps", "2",
            "--max_steps", "2",
            "--num_train_problems", "64",
            "--num_eval_problems", "8",
            "--max_completion_length", "16",
            "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert metrics["rl_steps"] == 2 and metrics["eval_problems"] == 8
    assert 0.0 <= metrics["accuracy_before"] <= 1.0 and 0.0 <= metrics["accuracy_after"] <= 1.0


def test_recipe_offline_hub_exits_fast(monkeypatch, tmp_path):
    recipe = _load_recipe()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as error:
        recipe.main(
            [
                "--model_name_or_path", "someone/not-a-cached-model",
                "--dataset_name", "openai/gsm8k",
                "--output_dir", str(tmp_path),
                "--use_cpu", "true",
                "--bf16", "false",
            ]
        )  # fmt: skip
    assert "--preset tiny" in str(error.value.code) and "someone/not-a-cached-model" in str(error.value.code)


@pytest.mark.slow
def test_recipe_tiny_full_run_improves(tmp_path):
    metrics = _load_recipe().main(["--preset", "tiny", "--output_dir", str(tmp_path)])
    assert metrics["accuracy_after"] > metrics["accuracy_before"]
