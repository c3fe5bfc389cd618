"""The GSM8K demo: answer extraction and the correctness reward, the built-in arithmetic task, and the tiny recipe."""

import json

import pytest

from dapo_trl.data import (
    arithmetic_dataset,
    arithmetic_problem,
    arithmetic_splits,
    early_answer,
    gsm8k_to_conversational,
    supervised_warm_start,
)
from dapo_trl.rewards import extract_answer, gsm8k_accuracy
from tests.helpers import load_recipe, run_script


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


def test_arithmetic_dataset_term_range_makes_length_grow_with_difficulty():
    dataset = arithmetic_dataset(300, seed=2, num_terms=(2, 6), max_value=9)
    assert set(dataset["num_terms"]) == {2, 3, 4, 5, 6}
    lines = {}
    for row in dataset:
        assert len(row["question"].rstrip("=").split("+")) == row["num_terms"]
        assert row["answer"].splitlines()[-1] == f"#### {eval(row['question'].rstrip('='))}"
        lines.setdefault(row["num_terms"], set()).add(len(row["answer"].splitlines()))
    assert lines == {k: {k} for k in range(2, 7)}  # one line per addition, plus the answer line
    assert arithmetic_dataset(5, seed=1)["num_terms"] == [3] * 5  # a fixed size: the same problems as before
    with pytest.raises(ValueError, match="num_terms"):
        arithmetic_dataset(5, num_terms=(4, 3))


def test_early_answer_stops_after_first_line():
    assert early_answer("12+13=25\n25+1=26\n#### 26") == "12+13=25\n#### 25"
    assert early_answer("3+4=7\n#### 7") == "3+4=7\n#### 7"  # two terms: the early answer is the answer
    for row in arithmetic_dataset(20, seed=5, num_terms=3, max_value=9):
        lazy = early_answer(row["answer"])
        assert lazy.splitlines()[0] == row["answer"].splitlines()[0] and len(lazy.splitlines()) == 2
        # graded like any completion: wrong unless the third term is 0
        expected = float(row["question"].rstrip("=").split("+")[2] == "0")
        assert gsm8k_accuracy([lazy], answer=[row["answer"]]) == [expected]


def test_supervised_warm_start_rejects_bad_early_answer_rate():
    from dapo_trl.testing import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    with pytest.raises(ValueError, match="early_answer_rate"):
        supervised_warm_start(model, tokenizer, arithmetic_dataset(4), steps=1, early_answer_rate=1.5, progress=False)
    stats = supervised_warm_start(
        model, tokenizer, arithmetic_dataset(4), steps=1, batch_size=2, early_answer_rate=1.0, progress=False
    )
    assert stats["loss"] > 0


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


def test_recipe_tiny_smoke(tmp_path):
    recipe = load_recipe()
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
    # The folder the demo wrote can be plotted as it is (the recipe saves trainer_state.json), and compared.
    from dapo_trl.cli import main as cli

    (tmp_path / "dashboard.png").unlink()
    assert cli(["plot", str(tmp_path)]) == 0 and (tmp_path / "dashboard.png").stat().st_size > 10_000
    other = tmp_path.parent / f"{tmp_path.name}-copy"
    other.mkdir()
    (other / "trainer_state.json").write_bytes((tmp_path / "trainer_state.json").read_bytes())
    assert cli(["plot", str(tmp_path), str(other), "-o", str(other / "cmp.png")]) == 0
    assert (other / "cmp.png").stat().st_size > 10_000


def test_recipe_offline_hub_exits_fast(monkeypatch, tmp_path, capsys):
    """The README's real-model command, offline and without a GPU: one line naming the model, exit status 2."""
    recipe = load_recipe()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as error:
        recipe.main(
            ["--model_name_or_path", "someone/not-a-cached-model", "--dataset_name", "openai/gsm8k",
             "--output_dir", str(tmp_path), "--max_completion_length", "512", "--num_generations", "8"]
        )  # fmt: skip
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gsm8k.py: error: ") and len(err.strip().splitlines()) == 1
    assert "someone/not-a-cached-model" in err and "python recipes/gsm8k.py --preset tiny" in err
    assert not list(tmp_path.iterdir())  # nothing heavy happened: nothing written


def test_recipe_offline_names_a_missing_dataset_only(monkeypatch, tiny_model_dir, capsys):
    """A local model folder is fine offline; the dataset that is not cached is the one named."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as error:
        load_recipe().main(["--model_name_or_path", tiny_model_dir, "--dataset_name", "someone/no-such-dataset"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "dataset 'someone/no-such-dataset'" in err and "model '" not in err


def test_real_model_command_as_a_user_runs_it(tmp_path):
    """The README's command in a fresh process without GPU: fp32 line, the one-line Hub message, status 2, fast."""
    import time

    start = time.monotonic()
    result = run_script(
        "gsm8k.py", "--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct", "--dataset_name", "openai/gsm8k",
        "--output_dir", str(tmp_path / "qwen"), "--max_completion_length", "512", "--num_generations", "8",
        home=tmp_path, HF_HUB_OFFLINE="1",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("dapo_trl: no CUDA GPU with bf16 found: training in fp32")
    assert lines[-1].startswith("gsm8k.py: error: ") and "'Qwen/Qwen2.5-0.5B-Instruct'" in lines[-1]
    assert len(lines) == 2, result.stderr
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_recipe_tiny_full_run_improves(tmp_path):
    metrics = load_recipe().main(["--preset", "tiny", "--output_dir", str(tmp_path), "--disable_tqdm", "true"])
    # Measured on 2 CPU cores with the default preset: seed 0 15.0% -> 61.0% (transformers 5.24; 7.0% -> 82.0% with
    # 5.23); earlier, seeds 1-3 11.5% -> 63.5%, 6.5% -> 30.5%, 11.0% -> 35.5%. The asserted margin (+20 points) is
    # below the smallest gain seen (+24 points).
    assert metrics["accuracy_before"] < 0.20
    assert metrics["accuracy_after"] >= metrics["accuracy_before"] + 0.20
    assert metrics["total_seconds"] < 600


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("3+4=7\n#### 7", 1.0),
        ("#### -1,250.5", 1.0),
        ([{"role": "assistant", "content": "4+4=8\n#### 8\n"}], 1.0),
        ("3+4=7, so 7", 0.0),
        ("#### 7 apples", 0.0),  # units after the number: not the asked-for format
        ("#### 7\nthanks", 0.0),  # the marker must be the last line
        ("", 0.0),
    ],
)
def test_gsm8k_format(completion, reward):
    from dapo_trl.rewards import gsm8k_format

    assert gsm8k_format([completion]) == [reward]


def test_recipe_format_reward_is_weighted_and_not_the_filter(tmp_path):
    load_recipe().main(
        [
            "--preset", "tiny", "--output_dir", str(tmp_path), "--sft_steps", "2", "--max_steps", "1",
            "--num_train_problems", "64", "--num_eval_problems", "4", "--max_completion_length", "16",
            "--disable_tqdm", "true", "--format_reward_weight", "0.5",
        ]
    )  # fmt: skip
    card = (tmp_path / "final" / "README.md").read_text()
    assert "gsm8k_accuracy (1)" in card and "gsm8k_format (0.5)" in card
    assert "| dynamic_sampling_metric | gsm8k_accuracy |" in card  # the filter stays on correctness


def test_hub_reachable_follows_hf_endpoint(monkeypatch):
    import socket

    recipe = load_recipe()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert recipe.hub_reachable(timeout=1.0)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # closed now
    assert not recipe.hub_reachable(timeout=1.0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not recipe.hub_reachable(timeout=1.0)
