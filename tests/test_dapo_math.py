"""DAPO-Math-17k and AIME data in their real layouts (files written here, loaded through `datasets`), the AIME-style
evaluation, and the DAPO-Math recipe's configs and offline end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from dapo_trl.data import (
    DAPO_MATH_COLUMNS,
    DAPO_MATH_TEMPLATE,
    dapo_math_prompt,
    dedupe_prompts,
    load_math_dataset,
    to_dapo_math_layout,
)
from dapo_trl.evaluation import _math_metrics, _shard, evaluate_math, generate_completions
from tests.helpers import load_recipe, run_script


pytest.importorskip("math_verify")

PROBLEMS = [("What is $3+4$?", "7"), ("Compute $\\frac{6}{3}$.", "2"), ("Find $x$ if $x-1=4$.", "5")]


def dapo_math_rows(problems=PROBLEMS, repeat: int = 1) -> list[dict]:
    """Rows exactly as in BytedTsinghua-SIA/DAPO-Math-17k (verl's layout); the Hub copy repeats problems."""
    rows = []
    for copy in range(repeat):
        for i, (problem, answer) in enumerate(problems):
            rows.append(
                {
                    "data_source": "math_dapo",
                    "prompt": [{"content": DAPO_MATH_TEMPLATE.format(problem=problem), "role": "user"}],
                    "ability": "MATH",
                    "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
                    "extra_info": {"index": f"{i:08x}-{copy}"},
                }
            )
    return rows


def write_dapo_math_parquet(path: Path, problems=PROBLEMS, repeat: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(dapo_math_rows(problems, repeat)).to_parquet(str(path))
    return path


def test_dapo_math_parquet_file_and_hub_style_folder(tmp_path):
    file = write_dapo_math_parquet(tmp_path / "dapo-math-17k.parquet", repeat=3)
    dataset = load_math_dataset(str(file))
    assert dataset.column_names == list(DAPO_MATH_COLUMNS) and len(dataset) == 3  # repeats removed
    assert dataset[0]["reward_model"]["ground_truth"] == "7"
    assert load_math_dataset(str(file), dedupe=False, limit=5).num_rows == 5
    folder = tmp_path / "DAPO-Math-17k"  # the Hub repository's layout: data/dapo-math-17k.parquet
    write_dapo_math_parquet(folder / "data" / "dapo-math-17k.parquet")
    assert load_math_dataset(str(folder), split="train")[2]["prompt"] == dapo_math_prompt(PROBLEMS[2][0])


def test_aime_layouts(tmp_path):
    h4 = tmp_path / "aime_2024.jsonl"  # HuggingFaceH4/aime_2024
    with open(h4, "w") as f:
        for i, (problem, answer) in enumerate(PROBLEMS):
            row = {"id": i, "problem": problem, "solution": "long worked solution", "answer": answer, "url": "u"}
            f.write(json.dumps({**row, "year": "2024"}) + "\n")
    maxwell = tmp_path / "aime.json"  # Maxwell-Jia/AIME_2024: capitalised columns, integer answers
    maxwell.write_text(
        json.dumps(
            [
                {"ID": f"2024-I-{i}", "Problem": p, "Solution": "s", "Answer": int(a)}
                for i, (p, a) in enumerate(PROBLEMS)
            ]
        )
    )
    dapo_aime = write_dapo_math_parquet(tmp_path / "aime-2024.parquet", repeat=32)  # DAPO's: each problem x 32
    for path in (h4, maxwell, dapo_aime):
        dataset = load_math_dataset(str(path))
        assert len(dataset) == 3 and set(DAPO_MATH_COLUMNS) <= set(dataset.column_names)
        assert [r["ground_truth"] for r in dataset["reward_model"]] == ["7", "2", "5"]
        assert "Answer:" in dataset[0]["prompt"][0]["content"]
    assert load_math_dataset(str(maxwell))[1]["extra_info"] == {"index": "2024-I-1"}


def test_to_dapo_math_layout_errors_and_passthrough():
    verl = Dataset.from_list(dapo_math_rows())
    assert to_dapo_math_layout(verl) is verl
    with pytest.raises(ValueError, match="problem column"):
        to_dapo_math_layout(Dataset.from_dict({"text": ["x"]}))
    question = to_dapo_math_layout(Dataset.from_dict({"question": ["2+2?"], "ground_truth": ["4"]}))
    assert question[0]["reward_model"]["ground_truth"] == "4" and question[0]["extra_info"]["index"] == "0"


def test_dedupe_prompts_plain_and_conversational():
    assert list(dedupe_prompts(Dataset.from_dict({"prompt": ["a", "b", "a"], "i": [0, 1, 2]}))["i"]) == [0, 1]
    unique = Dataset.from_dict({"prompt": ["a", "b"]})
    assert dedupe_prompts(unique) is unique


def test_shard_gives_every_process_the_same_count():
    shards = [_shard(10, rank, 4) for rank in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 3]
    assert sorted(set(sum(shards, []))) == list(range(10))
    assert _shard(1, 1, 2) == [0]  # nothing left: padded with a repeat


def test_math_metrics():
    details = [
        {"index": 0, "sample_rewards": [1.0, 0.0, 0.0, 1.0], "greedy_reward": 1.0},
        {"index": 1, "sample_rewards": [0.0] * 4, "greedy_reward": 0.0},
        {"index": 2, "sample_rewards": [None] * 4, "greedy_reward": None},
    ]
    assert _math_metrics(details, 4, True) == {
        "problems": 2, "unscorable": 1, "avg@4": 0.25, "pass@4": 0.5, "greedy_pass@1": 0.5,
    }  # fmt: skip


def test_evaluate_math_grades_like_trl(tiny_model_dir, monkeypatch):
    import dapo_trl.evaluation as evaluation

    dataset = load_math_dataset_from_rows(dapo_math_rows())

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size=128, num_samples=1, do_sample=False, *a):
        answers = {dapo_math_prompt(p)[0]["content"]: a for p, a in PROBLEMS}
        out = []
        for prompt in prompts:
            gold = answers[prompt[0]["content"]]
            right = f"Reasoning...\nAnswer: {gold}"
            # problem 7 always right, problem 2 right in half of the samples (never greedily), problem 5 never
            samples = {
                "7": [right] * num_samples,
                "2": [right, "Answer: 3"] * num_samples,
                "5": ["Answer: 0"] * num_samples,
            }
            out.append(samples[gold][:num_samples] if do_sample else [right if gold == "7" else "no idea"])
        return out

    monkeypatch.setattr(evaluation, "generate_completions", fake_generate)
    metrics, details = evaluate_math(None, None, dataset, k=4, return_details=True)
    assert metrics == {
        "problems": 3,
        "unscorable": 0,
        "avg@4": pytest.approx(0.5),
        "pass@4": pytest.approx(2 / 3),
        "greedy_pass@1": pytest.approx(1 / 3),
    }
    assert [d["index"] for d in details] == [0, 1, 2] and len(details[1]["samples"]) == 4


def load_math_dataset_from_rows(rows) -> Dataset:
    return to_dapo_math_layout(Dataset.from_list(rows))


def test_evaluate_math_on_tiny_model_is_seeded(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [[{"role": "user", "content": "1+1="}], [{"role": "user", "content": "2+2="}]]
    dataset = Dataset.from_dict({"prompt": prompts, "answer": ["2", "4"]})
    state = torch.random.get_rng_state()
    first = evaluate_math(model, tokenizer, dataset, k=3, max_new_tokens=6, return_details=True)[1]
    second = evaluate_math(model, tokenizer, dataset, k=3, max_new_tokens=6, return_details=True)[1]
    assert torch.equal(state, torch.random.get_rng_state())  # sampling leaves the global random state alone
    assert first == second and all(len(d["samples"]) == 3 for d in first)
    greedy = generate_completions(model, tokenizer, dataset["prompt"], max_new_tokens=6)
    assert [d["greedy"] for d in first] == [g[0] for g in greedy]


def test_recipe_end_to_end_offline(tmp_path):
    from dapo_trl.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny", max_position_embeddings=512)
    problems = [(f"What is ${a}+{b}$?", str(a + b)) for a in range(4) for b in range(4)]
    train = write_dapo_math_parquet(tmp_path / "data" / "dapo-math-17k.parquet", problems, repeat=2)
    aime = tmp_path / "aime_2024.jsonl"
    aime.write_text(
        "".join(json.dumps({"id": i, "problem": p, "answer": a}) + "\n" for i, (p, a) in enumerate(PROBLEMS))
    )
    out = tmp_path / "run"
    metrics = load_recipe("dapo_math").main(
        [
            "--model_name_or_path", model_dir, "--dataset_name", str(train), "--eval_dataset_name", str(aime),
            "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--num_generations", "4",
            "--steps_per_generation", "2", "--max_completion_length", "16", "--overlong_buffer_length", "4",
            "--max_num_gen_batches", "2", "--dynamic_sampling_max_oversample", "1.0", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--eval_k", "2", "--eval_max_new_tokens", "8", "--eval_every", "1", "--disable_tqdm", "true",
            "--dataloader_num_workers", "0",
        ]
    )  # fmt: skip
    assert metrics["train_problems"] == 16 and metrics["rl_steps"] == 2
    assert set(metrics) >= {"before", "step1", "after"}  # --eval_every 1 of 2 steps: not again at the last one
    for tag in ("before", "step1", "after"):
        assert (
            metrics[tag]["problems"] == 3 and 0.0 <= metrics[tag]["avg@2"] <= 1.0 and "greedy_pass@1" in metrics[tag]
        )
        lines = (out / f"eval_{tag}.jsonl").read_text().splitlines()
        assert len(lines) == 3 and len(json.loads(lines[0])["samples"]) == 2
    assert json.loads((out / "metrics.json").read_text()) == metrics
    card = (out / "final" / "README.md").read_text()
    assert "| dynamic_sampling_metric | math_accuracy_signed |" in card  # the filter is correctness, not length
    assert "| overlong_buffer_length | 4 |" in card


# GPUs each config is written for (its "# Hardware:" line), rollout prompts and completions per optimizer update.
DAPO_MATH_CONFIGS = {
    "dapo-math-qwen2.5-32b.yaml": (128, 512, 512),  # the paper: 512 prompts x 16, mini-batch 512
    "dapo-math-qwen2.5-7b.yaml": (8, 128, 128),
    "dapo-math-qwen2.5-math-1.5b-lora.yaml": (1, 32, 32),
}


def test_dapo_math_configs_exist():
    names = {p.name for p in (Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("dapo-math-*.yaml")}
    assert names == set(DAPO_MATH_CONFIGS)


@pytest.mark.parametrize("name", sorted(DAPO_MATH_CONFIGS))
def test_dapo_math_config_parses_with_the_papers_settings(name, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "recipes" / "configs" / name
    text = path.read_text()
    assert "# Hardware:" in text and "# Launch:" in text and "recipes/dapo_math.py" in text
    # bf16 and vLLM are validated against the machine; the configs target GPUs, this test runs anywhere.
    monkeypatch.setattr("transformers.training_args.TrainingArguments._validate_args", lambda self: None)
    monkeypatch.setattr("dapo_trl.config.is_torch_bf16_gpu_available", lambda: True)
    monkeypatch.setattr("trl.trainer.grpo_config.is_vllm_available", lambda *a, **k: True, raising=False)
    script_args, args, model_args = load_recipe("dapo_math").parse_args(["--config", str(path), "--bf16", "true"])
    gpus, prompts, per_update = DAPO_MATH_CONFIGS[name]
    assert script_args.dataset_name == "BytedTsinghua-SIA/DAPO-Math-17k"
    assert script_args.eval_dataset_name == "BytedTsinghua-SIA/AIME-2024" and script_args.eval_k == 32
    assert (script_args.eval_temperature, script_args.eval_top_p, script_args.signed_reward) == (1.0, 0.7, True)
    assert model_args.model_name_or_path.startswith("Qwen/Qwen2.5-") and model_args.dtype == "bfloat16"
    assert (args.epsilon, args.epsilon_high, args.beta, args.loss_agg_mode) == (0.2, 0.28, 0.0, "token-mean")
    assert args.dynamic_sampling and args.max_num_gen_batches == 10 and args.dynamic_sampling_max_oversample == 3.0
    assert args.num_generations == 16 and args.temperature == 1.0 and args.mask_truncated_completions
    assert args.overlong_penalty_factor == 1.0 and args.max_completion_length == 5 * args.overlong_buffer_length
    assert args.steps_per_generation == 16 * args.gradient_accumulation_steps  # 16 updates per rollout batch
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * gpus == per_update
    assert args.per_device_train_batch_size * args.steps_per_generation * gpus == prompts * args.num_generations
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert args.vllm_max_model_length >= args.max_completion_length + 1024
    assert args.warmup_steps == 160 and args.push_to_hub is False and args.bf16
    assert model_args.use_peft == name.endswith("lora.yaml")


def test_recipe_paper_defaults_and_cpu_fallback(capsys):
    recipe = load_recipe("dapo_math")
    script_args, args, _ = recipe.parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--use_cpu", "true"])
    assert (args.max_completion_length, args.overlong_buffer_length, args.learning_rate) == (20480, 4096, 1e-6)
    assert args.num_generations == 16 and args.weight_decay == 0.1 and args.bf16 is False  # no CUDA here: fp32
    assert args.steps_per_generation == 16 * args.gradient_accumulation_steps
    assert script_args.eval_k == 32 and script_args.eval_top_p == 0.7
    capsys.readouterr()
    with pytest.raises(SystemExit) as error:
        recipe.parse_args(["--output_dir", "o"])
    err = capsys.readouterr().err.strip().splitlines()
    assert error.value.code == 2 and err[-1].startswith("dapo_math.py: error: pass --model_name_or_path")


def test_recipe_missing_dataset_exits_with_one_line(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(SystemExit) as error:
        load_recipe("dapo_math").main(
            ["--model_name_or_path", tiny_model_dir, "--dataset_name", str(tmp_path / "missing.parquet"),
             "--output_dir", str(tmp_path), "--use_cpu", "true"]
        )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert error.value.code == 2 and err[-1].startswith("dapo_math.py: error: --dataset_name: no such file: ")
    assert "missing.parquet" in err[-1]


@pytest.mark.distributed
def test_evaluate_math_on_two_processes(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_distributed import torchrun

    torchrun("math_eval.py", tiny_model_dir, str(tmp_path / "eval"))
    rank0, rank1 = (json.loads((tmp_path / f"eval.rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["processes"] == rank1["processes"] == 2
    # 3 problems each (one padded): 3 sampling calls of 1 prompt x 2 samples, 2 greedy calls of 2 and 1 prompts
    assert rank0["calls"] == rank1["calls"] == [1, 1, 1, 2, 1]
    assert rank0["details"] == rank1["details"] and rank0["metrics"] == rank1["metrics"]
    assert [d["index"] for d in rank0["details"]] == [0, 1, 2, 3, 4] and rank0["metrics"]["problems"] == 5
    assert all(len(d["samples"]) == 2 for d in rank0["details"])
    # greedy decoding does not depend on the split: the same completions as one process
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [[{"role": "user", "content": f"{i}+1="}] for i in range(5)]
    greedy = generate_completions(model, tokenizer, prompts, max_new_tokens=6)
    assert [d["greedy"] for d in rank0["details"]] == [g[0] for g in greedy]


def test_recipe_unreachable_hub_exits_fast(tmp_path, monkeypatch, capsys):
    import socket
    import time

    with socket.socket() as closed:  # a port nothing listens on once this block ends
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as error:
        load_recipe("dapo_math").main(
            ["--model_name_or_path", "someone/not-a-cached-model", "--output_dir", str(tmp_path), "--use_cpu", "true"]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert error.value.code == 2 and err[-1].startswith("dapo_math.py: error: ")
    assert "someone/not-a-cached-model" in err[-1]
    assert time.perf_counter() - start < 30


# What a person sees from the script itself, in a fresh process without a GPU or the Hub.


def test_recipe_bad_value_is_one_line_without_traceback(tmp_path):
    result = run_script("dapo_math.py", "--model_name_or_path", "m", "--epsilon_high", "-1", home=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("dapo_math.py: error:")] == [
        "dapo_math.py: error: --epsilon_high=-1.0 must be >= 0."
    ]
    assert lines[-1] == "(see dapo_math.py --help)" and len(lines) <= 3, result.stderr  # + the fp32 line


def test_recipe_help_is_short_and_grouped(tmp_path):
    result = run_script("dapo_math.py", "--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    groups = [line for line in out.splitlines() if not line.startswith(" ") and line.endswith("options:")]
    assert groups == ["options:", "dapo_math.py options:", "DAPO options:", "common training options:"]
    for option in ["--eval_dataset_name", "--signed_reward", "--overlong_buffer_length", "--model_name_or_path"]:
        assert f"  {option} " in out, option
    assert "--adam_beta1" not in out and "--vllm_mode" not in out and len(out.splitlines()) < 260
    assert "--help-all lists them" in out.splitlines()[-1]
    assert "AdamW. (default: 1e-06)" in out  # the paper's defaults are the ones shown


def test_recipe_offline_hub_names_the_model(tmp_path):
    result = run_script(
        "dapo_math.py", "--model_name_or_path", "someone/not-a-cached-model", "--output_dir", str(tmp_path / "run"),
        home=tmp_path, HF_HUB_OFFLINE="1",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dapo_math.py: error: ")]
    assert len(errors) == 1 and "'someone/not-a-cached-model'" in errors[0], result.stderr
    assert "dataset 'BytedTsinghua-SIA/DAPO-Math-17k'" in errors[0] and "recipes/gsm8k.py --preset tiny" in errors[0]
    assert not (tmp_path / "run").exists()  # nothing heavy happened
