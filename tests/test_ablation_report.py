"""benchmarks/ablation.py and ablation_report.py: the per-run summary against hand-computed values, the paired
verdicts, the config rows (each adds exactly its part) and the report and plot rendered from a results payload."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ablation  # noqa: E402
import ablation_report  # noqa: E402


def totals(completions, tokens, truncated, groups, zero_variance, max_len):
    return dict(completions=completions, tokens=tokens, truncated=truncated, groups=groups,
                zero_variance=zero_variance, max_len=max_len)  # fmt: skip


def make_run(name="grpo", seed=0, shift=0.0):
    """8 steps, rollouts at steps 1 and 5 (4 steps per rollout); evaluations at steps 0, 4 and 8."""
    first, second = totals(64, 1600, 8, 8, 4, 40), totals(128, 3000, 24, 16, 6, 44)
    steps = [{"step": s, **(first if s <= 4 else second)} for s in range(1, 9)]
    evals = [
        {"step": 0, "avg@8": 0.05 + shift, "greedy_pass@1": 0.04 + shift},
        {"step": 4, "avg@8": 0.12 + shift, "greedy_pass@1": 0.10 + shift},
        {"step": 8, "avg@8": 0.18 + shift, "greedy_pass@1": 0.20 + shift},
    ]
    logged = {"entropy": [1.0, 1.0, 1.0, 1.0, 0.8, 0.8, 0.6, 0.4]}
    return {"name": name, "seed": seed, "seconds": 90.0, "steps": steps, "evals": evals, "logged": logged}


def test_summarize_run_by_hand():
    s = ablation_report.summarize_run(make_run(), budget=2000, targets=[0.05, 0.1, 0.2])  # gains over 0.05
    assert (s["mean8_final"], s["greedy_final"]) == (0.18, 0.20)
    # Within 2000 generated tokens: the evaluation at step 4 (1600 tokens), not step 8 (3000).
    assert (s["budget_step"], s["mean8_budget"], s["greedy_budget"]) == (4, 0.12, 0.10)
    assert (s["steps_to_0.05"], s["tokens_to_0.05"]) == (4, 1600)  # 0.12 >= 0.05 + 0.05
    assert (s["steps_to_0.1"], s["tokens_to_0.1"]) == (8, 3000)  # 0.18 >= 0.05 + 0.1
    assert s["steps_to_0.2"] is None and s["tokens_to_0.2"] is None
    # Start: the first rollout (64 completions, 1600 tokens); end: the last quarter's rollout (steps 5-8).
    assert s["length_start"] == 25.0 and s["length_end"] == pytest.approx(1400 / 64)
    assert (s["truncated_start"], s["truncated_end"]) == (0.125, 0.25)
    assert (s["zero_variance_start"], s["zero_variance_end"]) == (0.5, 0.25)
    assert (s["entropy_start"], s["entropy_end"]) == (1.0, 0.4)
    assert (s["completions_per_step"], s["max_length"], s["minutes"]) == (16.0, 44, 1.5)


def table_of(diffs):
    table = {"a": {}, "b": {}}
    for seed, diff in enumerate(diffs):
        table["a"][seed] = {"mean8_final": 0.1}
        table["b"][seed] = {"mean8_final": 0.1 + diff}
    return table


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [([0.05] * 5, "helps"), ([-0.02, -0.03, -0.01, -0.02, -0.04], "hurts"), ([0.05, -0.05, 0.01, -0.02, 0.0], "unclear"),
     ([0.05] * 4, "unclear")],
)  # fmt: skip
def test_verdict_reads_the_paired_interval(diffs, expected):
    assert ablation_report.verdict(table_of(diffs), "a", "b") == expected


def test_comparisons_follow_the_progression():
    names = [name for name, *_ in ablation.CONFIGS]
    pairs = ablation_report.comparisons(names)
    assert pairs[:5] == list(zip(names[:5], names[1:6]))
    assert pairs[5:] == [("dapo", "dapo_fixed"), ("grpo", "dapo")]


def test_each_config_row_adds_exactly_its_part():
    changed = {row["name"]: set(row["changed"]) for row in ablation.config_table(steps=10)}
    assert changed == {
        "grpo": set(),
        "overlong_filter": {"mask_truncated_completions"},
        "clip_higher": {"epsilon_high"},
        "soft_overlong": {"overlong_buffer_length"},
        "token_mean": {"loss_type", "loss_agg_mode"},
        "dapo": {"dynamic_sampling"},
        "dapo_fixed": {"dynamic_sampling_round_size"},
    }


def test_report_and_plot_render_from_a_payload(tmp_path):
    by_terms = {"2": {"gold_tokens": 13.0, "length": 14.0, "accuracy": 0.6, "truncated": 0.0, "zero_variance": 0.2},
                "6": {"gold_tokens": 45.0, "length": 30.0, "accuracy": 0.05, "truncated": 0.4, "zero_variance": 0.6}}  # fmt: skip
    overall = {"accuracy": 0.3, "length": 22.0, "truncated": 0.1, "zero_variance": 0.4}
    props = {"by_terms": by_terms, "overall": overall, "limit": 44, "prompts": 96, "samples": 8}
    names = ["grpo", "dapo"]
    payload = {
        "meta": {"date": "today"},
        "command": "python benchmarks/ablation.py",
        "wall_seconds": 60.0,
        "plan": {"seeds": [0, 1], "steps": 8, "eval_every": 4, "jobs": 2, "targets": [0.1, 0.15], "n_test": 100},
        "task": ablation.TASK,
        "common": ablation.COMMON,
        "configs": [row for row in ablation.config_table(steps=8) if row["name"] in names],
        "properties": {"0": props, "1": props},
        "runs": [make_run(n, seed, 0.02 * (n == "dapo")) for n in names for seed in (0, 1)],
    }
    ablation_report.write_report(payload, tmp_path / "ABLATION.md")
    text = (tmp_path / "ABLATION.md").read_text()
    for heading in (
        "## The task, measured",
        "## Accuracy",
        "## Does each addition help?",
        "## Reading",
        "## Per seed",
    ):
        assert heading in text
    # The one pair, once; 2 seeds that agree are still "unclear" (a verdict needs 5).
    rows = [line for line in text.splitlines() if line.startswith("| + dynamic sampling (DAPO) vs GRPO")]
    assert rows == [
        "| + dynamic sampling (DAPO) vs GRPO (TRL GRPOTrainer) | " + "+2.0 [+2.0, +2.0] (2/2) | " * 4 + "unclear |"
    ]
    assert "3.5x the tokens" in text  # 45 / 13 tokens
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    assert (tmp_path / "ABLATION.json").exists()
