"""Measurements and report of `benchmarks/ablation.py`: the task's properties, per-run summaries, statistics over
seeds, the markdown report and the plot. Everything in the report is computed from the results JSON."""

from __future__ import annotations

import statistics
from collections import defaultdict

import reporting


def task_properties(model, tokenizer, splits, limit: int, seed: int, prompts: int = 96, samples: int = 8) -> dict:
    """What the task gives DAPO to act on, measured on the warm start: per number of terms, the correct solution's
    tokens (with EOS), and over `samples` sampled completions (temperature 1) of `prompts` training problems the
    accuracy, completion length, truncation at `limit` and the share of zero-variance groups."""
    import torch

    from dapo_trl.evaluation import generate_completions
    from dapo_trl.rewards import gsm8k_accuracy

    train = splits["train"].select(range(min(prompts, len(splits["train"]))))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        outputs = generate_completions(model, tokenizer, train["prompt"], limit, 256, samples, True, 1.0, 1.0)
    by_terms = defaultdict(lambda: defaultdict(list))
    for terms, answer, texts in zip(train["num_terms"], train["answer"], outputs):
        rewards = gsm8k_accuracy(texts, [answer] * len(texts))
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]
        row = by_terms[terms]
        row["gold_tokens"].append(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1)
        row["accuracy"].append(sum(rewards) / len(rewards))
        row["length"].append(sum(min(n, limit) for n in lengths) / len(lengths))
        row["truncated"].append(sum(n > limit for n in lengths) / len(lengths))
        row["zero_variance"].append(float(len(set(rewards)) == 1))
    table = {terms: {key: statistics.mean(values) for key, values in row.items()} | {"problems": len(row["accuracy"])}
             for terms, row in sorted(by_terms.items())}  # fmt: skip
    overall = {key: statistics.mean(v for row in by_terms.values() for v in row[key]) for key in
               ("accuracy", "length", "truncated", "zero_variance")}  # fmt: skip
    return {"by_terms": table, "overall": overall, "limit": limit, "prompts": len(train), "samples": samples}


# ------------------------------------------------------------------------------------------------ one run


def _window(steps: list[dict], first: int, last: int) -> dict:
    """Totals generated between two optimizer steps (`steps` holds running totals; step 0 is all zeros)."""
    zero = dict.fromkeys(steps[0], 0)
    before = steps[first - 2] if first > 1 else zero
    after = steps[last - 1]
    return {key: after[key] - before[key] for key in after if key not in ("step", "max_len")}


def _rate(window: dict, part: str, whole: str) -> float:
    return window[part] / window[whole] if window[whole] else float("nan")


def summarize_run(run: dict, budget: float, targets: list[float]) -> dict:
    """The numbers the report shows for one run: accuracies at the last step and at the token `budget` (the last
    evaluation whose generated tokens are within it), steps and tokens to each greedy-accuracy target, and what was
    generated at the start (first rollout) and over the last quarter of the steps."""
    steps, evals = run["steps"], sorted(run["evals"], key=lambda e: e["step"])
    tokens = {0: 0, **{s["step"]: s["tokens"] for s in steps}}
    within = [e for e in evals if tokens[e["step"]] <= budget] or evals[:1]
    n, spg = len(steps), 4
    # Windows start at a rollout (every `spg` steps): the end window is the rollouts of the last quarter.
    start, end = _window(steps, 1, spg), _window(steps, (n - n // 4) // spg * spg + 1, n)
    entropy = [v for v in run["logged"]["entropy"] if v is not None]
    tail = entropy[-max(len(entropy) // 10, 1) :]
    summary = {
        "greedy_start": evals[0]["greedy_pass@1"],
        "mean8_start": evals[0]["avg@8"],
        "greedy_final": evals[-1]["greedy_pass@1"],
        "mean8_final": evals[-1]["avg@8"],
        "greedy_budget": within[-1]["greedy_pass@1"],
        "mean8_budget": within[-1]["avg@8"],
        "budget_step": within[-1]["step"],
        "entropy_start": statistics.mean(entropy[:spg]) if entropy else float("nan"),
        "entropy_end": statistics.mean(tail) if tail else float("nan"),
        "length_start": _rate(start, "tokens", "completions"),
        "length_end": _rate(end, "tokens", "completions"),
        "max_length": steps[-1]["max_len"],
        "truncated_start": _rate(start, "truncated", "completions"),
        "truncated_end": _rate(end, "truncated", "completions"),
        "zero_variance_start": _rate(start, "zero_variance", "groups"),
        "zero_variance_end": _rate(end, "zero_variance", "groups"),
        "completions_per_step": steps[-1]["completions"] / n,
        "tokens_total": steps[-1]["tokens"],
        "minutes": run["seconds"] / 60,
    }
    for target in targets:  # gains over this seed's warm start: the warm starts differ widely between seeds
        reached = next((e for e in evals if e["avg@8"] >= evals[0]["avg@8"] + target), None)
        summary[f"steps_to_{target:g}"] = reached["step"] if reached else None
        summary[f"tokens_to_{target:g}"] = tokens[reached["step"]] if reached else None
    return summary


# ------------------------------------------------------------------------------------------------ over seeds

# (key, label, formatter kind) of the report's tables; "pct" values are fractions.
ACCURACY = [
    ("greedy_final", "greedy, last step", "pct"),
    ("mean8_final", "mean@8, last step", "pct"),
    ("greedy_budget", "greedy, token budget", "pct"),
    ("mean8_budget", "mean@8, token budget", "pct"),
]
DYNAMICS = [
    ("entropy_start", "entropy, start", "f2"),
    ("entropy_end", "entropy, end", "f2"),
    ("length_start", "mean length, start", "f1"),
    ("length_end", "mean length, end", "f1"),
    ("max_length", "max length", "int"),
    ("truncated_start", "truncated, start", "pct"),
    ("truncated_end", "truncated, end", "pct"),
    ("zero_variance_start", "zero-variance groups, start", "pct"),
    ("zero_variance_end", "zero-variance groups, end", "pct"),
    ("completions_per_step", "completions / step", "f1"),
    ("minutes", "minutes / run", "f1"),
]


def token_budget(runs: list[dict]) -> int:
    """The generation budget every run reached: the fewest completion tokens any run generated in its steps."""
    return min(run["steps"][-1]["tokens"] for run in runs)


def summaries(data: dict) -> dict[str, dict[int, dict]]:
    """`{config: {seed: summary}}` of every run, with the budget and targets the report states."""
    budget, targets = token_budget(data["runs"]), data["plan"]["targets"]
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    for run in data["runs"]:
        out[run["name"]][run["seed"]] = summarize_run(run, budget, targets)
    return out


def paired(table: dict[str, dict[int, dict]], before: str, after: str, key: str) -> list[float]:
    """Per-seed differences `after - before` of `key`, over the seeds both configs ran."""
    seeds = sorted(set(table[before]) & set(table[after]))
    return [table[after][s][key] - table[before][s][key] for s in seeds]


# ------------------------------------------------------------------------------------------------ plot


def _median_curve(
    points: list[list[tuple[float, float]]],
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Median and range over seeds of curves sampled at the same x positions (per-seed lists of (x, y))."""
    xs = [statistics.median(p[i][0] for p in points) for i in range(min(map(len, points)))]
    ys = [[p[i][1] for p in points] for i in range(len(xs))]
    return xs, [statistics.median(y) for y in ys], [min(y) for y in ys], [max(y) for y in ys]


def _generation_series(run: dict, key: str, whole: str) -> list[tuple[float, float]]:
    """A per-rollout rate (e.g. truncated / completions) at each rollout's first step."""
    steps, out = run["steps"], []
    for first in range(1, len(steps) + 1, 4):
        window = _window(steps, first, min(first + 3, len(steps)))
        out.append((first, _rate(window, key, whole)))
    return out


def _smoothed(values: list, width: int = 8) -> list[tuple[float, float]]:
    """Means of consecutive blocks of `width` logged values, at each block's last step."""
    return _blocks([(i + 1, v) for i, v in enumerate(values) if v is not None], width)


def _blocks(points: list[tuple[float, float]], width: int) -> list[tuple[float, float]]:
    """Means of consecutive blocks of `width` points, at each block's last x."""
    blocks = [points[i : i + width] for i in range(0, len(points), width)]
    return [(block[-1][0], statistics.mean(v for _, v in block)) for block in blocks]


def plot(data: dict, path) -> None:
    """ablation.png: held-out mean@8 against steps and against generated tokens, entropy, truncation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(13, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    colors = ["#555555", "#8c564b", "#e377c2", "#ff7f0e", "#1f77b4", "#2ca02c", "#17becf"]
    for config, color in zip(data["configs"], colors):
        runs = [r for r in data["runs"] if r["name"] == config["name"]]
        if not runs:
            continue
        evals = [sorted(r["evals"], key=lambda e: e["step"]) for r in runs]
        tokens = [{0: 0, **{s["step"]: s["tokens"] for s in r["steps"]}} for r in runs]
        curves = {
            (0, 0): [[(e["step"], e["avg@8"]) for e in ev] for ev in evals],
            (0, 1): [[(t[e["step"]] / 1000, e["avg@8"]) for e in ev] for ev, t in zip(evals, tokens)],
            (1, 0): [_smoothed(r["logged"]["entropy"]) for r in runs],
            (1, 1): [_blocks(_generation_series(r, "truncated", "completions"), 4) for r in runs],
        }
        for (row, col), points in curves.items():
            xs, mid, low, high = _median_curve(points)
            ax = axes[row][col]
            ax.plot(xs, mid, color=color, linewidth=1.8, label=config["label"], marker="o" if len(xs) < 30 else None)
            ax.fill_between(xs, low, high, color=color, alpha=0.08)
    titles = [
        ("Held-out mean@8 (sampled accuracy)", "optimizer step", "accuracy"),
        ("Held-out mean@8 against generation cost", "completion tokens generated (thousands)", "accuracy"),
        ("Token entropy of the trained batch (TRL's `entropy`, mean of 8 steps)", "optimizer step", "nats per token"),
        ("Truncated completions (all generated, mean of 4 rollouts)", "optimizer step", "share of completions"),
    ]
    for ax, (title, xlabel, ylabel) in zip(axes.flat, titles):
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ylabel != "nats per token":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    seeds = len(data["plan"]["seeds"])
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"DAPO's ablation on the chain-sum task: median over {seeds} seeds (shaded: min to max)")
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------------ report

_FORMATS = {"pct": ".1%", "f1": ".1f", "f2": ".2f", "int": ".0f"}
PAPER_AIME = {"grpo": 30, "overlong_filter": 36, "clip_higher": 38, "soft_overlong": 41, "token_mean": 42, "dapo": 50}


def write_report(data: dict, path) -> None:
    """ABLATION.md (and its JSON) plus ablation.png next to it."""
    from pathlib import Path

    path = Path(path)
    reporting.write_report(path, data, render)
    plot(reporting.read_results(path.with_suffix(".json")), path.with_name("ablation.png"))


def _ci(values: list, kind: str) -> str:
    interval = reporting.median_ci(values)
    return reporting.fmt_ci(interval.median, interval.lo, interval.hi, _FORMATS[kind])


def _diff(table: dict, before: str, after: str, key: str) -> str:
    """Paired per-seed difference against the row before: median [95% CI], and how many seeds improved."""
    seeds = sorted(set(table[before]) & set(table[after]))
    d = reporting.paired_diffs([table[before][s][key] for s in seeds], [table[after][s][key] for s in seeds])
    better = sum(x > 0 for x in d.diffs)
    points = [None if reporting.is_missing(v) else 100 * v for v in (d.median, d.lo, d.hi)]
    return f"{reporting.fmt_ci(*points, '+.1f')} ({better}/{d.n})"


MIN_SEEDS_FOR_VERDICT = 5


def verdict(table: dict, before: str, after: str, key: str = "mean8_final") -> str:
    """`helps` / `hurts` when the paired 95% interval excludes 0 (at 5 seeds or more), else `unclear`."""
    seeds = sorted(set(table[before]) & set(table[after]))
    d = reporting.paired_diffs([table[before][s][key] for s in seeds], [table[after][s][key] for s in seeds])
    # Below 5 seeds a bootstrap interval is too narrow to read (all of 2 seeds agree by chance 1 time in 2).
    if d.n < MIN_SEEDS_FOR_VERDICT or reporting.is_missing(d.lo):
        return "unclear"
    return "helps" if d.lo > 0 else "hurts" if d.hi < 0 else "unclear"


def render(data: dict) -> str:
    table = summaries(data)
    names = [c["name"] for c in data["configs"] if c["name"] in table]
    plan, budget = data["plan"], token_budget(data["runs"])
    lines = reporting.results_header("DAPO's ablation in miniature: does each part earn its place?", data)
    lines += [
        "",
        f"{len(names)} configs x {len(plan['seeds'])} seeds (the same seeds for every config), {plan['steps']} "
        f"optimizer steps each, {plan['jobs']} runs at a time (one core each). Every number below is computed from "
        "`ABLATION.json`, which this script wrote (`--render ABLATION.json` re-renders this file and the plot).",
        "",
        "![curves](ablation.png)",
        "",
        *_task_section(data),
        *_setup_section(data),
        "## Accuracy",
        "",
        f"Held-out problems ({plan['n_test']}, disjoint from training): greedy accuracy and mean@8 (8 samples at "
        "temperature 1). *Last step*: after the same number of optimizer steps. *Token budget*: at the last "
        f"evaluation (every {plan['eval_every']} steps) within {budget:,} generated completion tokens, the fewest any "
        "run generated (dynamic sampling spends more tokens per step: it also generates the groups it drops). "
        "Median over seeds [bootstrap 95% interval].",
        "",
        reporting.md_table(["config", *(label for _, label, _ in ACCURACY)],
                           [[_label(data, n), *(_ci([table[n][s][k] for s in table[n]], kind)
                             for k, _, kind in ACCURACY)] for n in names], "l" + "r" * len(ACCURACY)),
        "",
        *_paired_section(data, table, names),
        *_dynamics_section(data, table, names),
        *_reading(data, table, names),
        *_per_seed(data, table, names),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _label(data: dict, name: str) -> str:
    return next(c["label"] for c in data["configs"] if c["name"] == name)


def _task_section(data: dict) -> list[str]:
    """The task's properties, measured on each seed's warm start (mean over seeds)."""
    props = list(data["properties"].values())
    terms = sorted(props[0]["by_terms"], key=int)
    mean = lambda t, key: statistics.mean(p["by_terms"][t][key] for p in props if t in p["by_terms"])  # noqa: E731
    rows = [
        [
            t,
            f"{mean(t, 'gold_tokens'):.1f}",
            f"{mean(t, 'length'):.1f}",
            reporting.pct(mean(t, "accuracy"), 1),
            reporting.pct(mean(t, "truncated"), 1),
            reporting.pct(mean(t, "zero_variance"), 1),
        ]
        for t in terms
    ]
    overall = {k: statistics.mean(p["overall"][k] for p in props) for k in props[0]["overall"]}
    limit, task = props[0]["limit"], data["task"]
    return [
        "## The task, measured",
        "",
        f"Sums of {task['num_terms'][0]} to {task['num_terms'][1]} terms in 0-{task['max_value']}, solved one addition "
        f"per line with running partial sums (`dapo_trl.data.arithmetic_dataset(num_terms=(low, high))`). Completion "
        f"limit {limit} tokens. Measured on each seed's warm start ({props[0]['prompts']} training problems x "
        f"{props[0]['samples']} samples at temperature 1; mean over {len(props)} seeds):",
        "",
        reporting.md_table(["terms", "correct solution, tokens", "sampled length", "sampled accuracy",
                            "truncated", "zero-variance groups"], rows, "rrrrrr"),
        "",
        f"Overall at the start: accuracy {reporting.pct(overall['accuracy'], 1)}, truncated "
        f"{reporting.pct(overall['truncated'], 1)}, zero-variance groups {reporting.pct(overall['zero_variance'], 1)}. "
        f"So a correct long solution has {mean(terms[-1], 'gold_tokens') / mean(terms[0], 'gold_tokens'):.1f}x the "
        "tokens of a short one (token-level and per-sequence losses weigh them differently), the limit cuts the "
        "longest attempts (overlong filtering and punishment act), and many groups carry no signal (dynamic sampling "
        "acts). How these evolve during training is in the dynamics table below.",
        "",
    ]  # fmt: skip


def _setup_section(data: dict) -> list[str]:
    common, task = data["common"], data["task"]
    shared = ", ".join(f"{k}={v}" for k, v in common.items() if k not in ("use_cpu", "bf16", "report_to",
                       "save_strategy", "logging_steps", "dataloader_num_workers", "disable_tqdm"))  # fmt: skip
    rows = []
    for config in data["configs"]:
        changed = ", ".join(f"`{k}`: {a!r} -> {b!r}" for k, (a, b) in config["changed"].items()) or "-"
        trainer = "`trl.GRPOTrainer`" if config["trainer"] == "trl" else "`DAPOTrainer`"
        rows.append([config["label"], trainer, changed])
    return [
        "## Setup",
        "",
        f"- Model: tiny character-level Qwen2 (hidden size {task['hidden_size']}, `dapo_trl.testing`), warm-started "
        f"once per seed by {task['sft_steps']} supervised steps (lr {task['sft_learning_rate']}) on "
        f"{task['n_train']} training problems, {task['early_answer_rate']:.0%} of whose solutions stop after the first "
        "addition (`early_answer_rate`): a sloppy SFT set that RL can correct. Every config loads that folder.",
        f"- Shared settings: {shared}, max_completion_length={task['max_completion_length']}; CPU, fp32.",
        "- Reward: `gsm8k_accuracy` (1 if the `#### n` line is right). From the soft-punishment row on, DAPOTrainer "
        "adds its `overlong_penalty` reward (dynamic sampling still filters on accuracy alone).",
        "- Each row changes the config fields listed against the row before it (read from the real config objects; "
        "paths left out). The first row is TRL's own trainer; the switch to DAPOTrainer happens with overlong "
        "filtering, which is also a TRL option (`mask_truncated_completions`).",
        "",
        reporting.md_table(["config", "trainer", "changes from the row above"], rows, "lll"),
        "",
    ]


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """Each addition against the row before it; fixed rounds against adaptive DAPO; DAPO against GRPO."""
    progression = [n for n in names if n != "dapo_fixed"]
    pairs = list(zip(progression, progression[1:]))
    if "dapo" in names:
        pairs += [("dapo", "dapo_fixed")] if "dapo_fixed" in names else []
        pairs += [("grpo", "dapo")] if "grpo" in names else []
    return list(dict.fromkeys(pairs))


def _paired_section(data: dict, table: dict, names: list[str]) -> list[str]:
    keys = [("mean8_final", "mean@8, last step"), ("greedy_final", "greedy, last step"),
            ("mean8_budget", "mean@8, token budget"), ("greedy_budget", "greedy, token budget")]  # fmt: skip
    rows = [[f"{_label(data, after)} vs {_label(data, before)}", *(_diff(table, before, after, key) for key, _ in keys),
             verdict(table, before, after)] for before, after in comparisons(names)]  # fmt: skip
    return [
        "## Does each addition help? Paired per-seed differences",
        "",
        "Each row: the config minus the row above it on the same seed (same warm start, same prompts), in accuracy "
        "points: median [bootstrap 95% interval] (seeds where it is higher / seeds). *Verdict* reads the mean@8 "
        "difference at the last step: `helps` or `hurts` when its interval excludes 0 (with at least 5 seeds), else "
        "`unclear`.",
        "",
        reporting.md_table(["comparison", *(label for _, label in keys), "verdict"], rows, "lrrrrl"),
        "",
    ]  # fmt: skip


def _dynamics_section(data: dict, table: dict, names: list[str]) -> list[str]:
    rows = [[_label(data, n), *(_ci([table[n][s][k] for s in table[n]], kind) for k, _, kind in DYNAMICS)]
            for n in names]  # fmt: skip
    targets = data["plan"]["targets"]
    starts = [table[names[0]][s]["mean8_start"] for s in table[names[0]]]
    target_rows = []
    for n in names:
        cells = []
        for t in targets:
            steps = [table[n][s][f"steps_to_{t:g}"] for s in table[n]]
            tokens = [table[n][s][f"tokens_to_{t:g}"] for s in table[n]]
            reached = sum(v is not None for v in steps)
            cells.append(
                f"{_ci(steps, 'int')} / {reporting.kfmt(reporting.median_ci(tokens).median)} ({reached}/{len(steps)})"
            )
        target_rows.append([_label(data, n), *cells])
    return [
        "## What was generated and trained",
        "",
        "*Start*: the first rollout (4 optimizer steps); *end*: the last quarter of the steps. Lengths, truncation and "
        "zero-variance groups describe every generated completion (dynamic sampling's dropped groups included); "
        "entropy is TRL's logged token entropy of the trained batch. Median [bootstrap 95% interval] over seeds.",
        "",
        reporting.md_table(["config", *(label for _, label, _ in DYNAMICS)], rows, "l" + "r" * len(DYNAMICS)),
        "",
        f"Steps / completion tokens until held-out mean@8 first gains each target over the seed's own warm start "
        f"(which ranges from {reporting.pct(min(starts), 1)} to {reporting.pct(max(starts), 1)} across seeds), at the "
        f"evaluations every {data['plan']['eval_every']} steps; median over the seeds that reached it (reached / seeds):",
        "",
        reporting.md_table(
            ["config", *(f"+{t * 100:g} points" for t in targets)], target_rows, "l" + "r" * len(targets)
        ),
        "",
    ]


def _reading(data: dict, table: dict, names: list[str]) -> list[str]:
    """Which additions help, from the verdicts, and the paper's numbers next to ours."""
    pairs = [(b, a) for b, a in comparisons(names) if (b, a) != ("grpo", "dapo")]
    verdicts = {a: verdict(table, b, a) for b, a in pairs}
    helps = [_label(data, a) for a, v in verdicts.items() if v == "helps"]
    hurts = [_label(data, a) for a, v in verdicts.items() if v == "hurts"]
    unclear = [_label(data, a) for a, v in verdicts.items() if v == "unclear"]
    med = {n: reporting.median_ci([table[n][s]["mean8_final"] for s in table[n]]).median for n in names}
    rows = [[_label(data, n), f"{PAPER_AIME[n]}" if n in PAPER_AIME else "-", reporting.pct(med[n], 1)] for n in names]
    overall = verdict(table, "grpo", "dapo") if {"grpo", "dapo"} <= set(names) else "n/a"
    return [
        "## Reading",
        "",
        f"- Help (paired interval above 0): {', '.join(helps) or 'none'}.",
        f"- Hurt (paired interval below 0): {', '.join(hurts) or 'none'}.",
        f"- Not separated from the row before at {len(data['plan']['seeds'])} seeds: {', '.join(unclear) or 'none'}.",
        f"- Full DAPO against TRL's GRPO, mean@8 at the last step: {overall}.",
        *_explanations(data, table, names),
        "",
        "The paper's ablation (AIME 2024 avg@32, Qwen2.5-32B, thousands of GPU hours) next to this one (held-out mean@8, "
        "median over seeds). The paper adds each part once, on one run; here each row has seeds and a paired interval, "
        "and a tiny model on a toy task is not a 32B model on competition math: read the direction, not the size.",
        "",
        reporting.md_table(["config", "paper: AIME24", "here: mean@8, last step"], rows, "lrr"),
        "",
    ]


def _median(table: dict, name: str, key: str) -> float:
    return reporting.median_ci([table[name][s][key] for s in table[name]]).median


def _explanations(data: dict, table: dict, names: list[str]) -> list[str]:
    """What the dynamics table says about the rows that moved, each sentence only when its premise holds."""
    lines, limit = [], data["task"]["max_completion_length"]
    if "soft_overlong" in names and verdict(table, "clip_higher", "soft_overlong") == "hurts":
        start = limit - _soft_buffer(data)
        props = list(data["properties"].values())
        gold = {t: statistics.mean(p["by_terms"][t]["gold_tokens"] for p in props) for t in props[0]["by_terms"]}
        charged = ", ".join(
            f"{t} terms: {g:.1f}" for t, g in sorted(gold.items(), key=lambda x: int(x[0])) if g > start
        )
        lines.append(
            f"- Soft overlong punishment charges every completion longer than {start} tokens, and correct solutions of "
            f"the longest sums are that long ({charged} tokens on average): it taxes right answers to the hardest "
            f"problems. Completions got shorter (mean length at the end {_median(table, 'soft_overlong', 'length_end'):.1f} "
            f"vs {_median(table, 'clip_higher', 'length_end'):.1f} without it) and accuracy fell. In the paper the buffer "
            "(4k of 20k tokens) sits above what most correct answers need; here the limit binds on correct work."
        )  # fmt: skip
    if {"grpo", "dapo"} <= set(names):
        lines.append(
            f"- Full DAPO minus GRPO, paired, mean@8 points: {_diff(table, 'grpo', 'dapo', 'mean8_final')} at the last "
            f"step, {_diff(table, 'grpo', 'dapo', 'mean8_budget')} at the token budget: dynamic sampling generates "
            f"{_median(table, 'dapo', 'completions_per_step') / _median(table, 'grpo', 'completions_per_step'):.2f}x the "
            "completions per step, and recovers what the soft punishment and token-level rows lost."
        )
        entropy = [_median(table, n, k) for n in ("grpo", "dapo") for k in ("entropy_start", "entropy_end")]
        lines.append(
            "- Entropy falls in every config (GRPO {:.2f} -> {:.2f}, DAPO {:.2f} -> {:.2f} nats per token); clip-higher "
            "minus overlong filtering, entropy at the end, in hundredths of a nat: {}.".format(
                *entropy, _diff(table, "overlong_filter", "clip_higher", "entropy_end")
            )
        )
    return lines


def _soft_buffer(data: dict) -> int:
    return next(c["changed"]["overlong_buffer_length"][1] for c in data["configs"] if c["name"] == "soft_overlong")


def _per_seed(data: dict, table: dict, names: list[str]) -> list[str]:
    seeds = sorted({s for n in names for s in table[n]})
    cell = lambda n, s: (f"{table[n][s]['greedy_final']:.0%} / {table[n][s]['mean8_final']:.1%}"  # noqa: E731
                         if s in table[n] else "-")  # fmt: skip
    first = names[0]
    start = [f"{table[first][s]['greedy_start']:.0%} / {table[first][s]['mean8_start']:.1%}" for s in seeds]
    rows = [["warm start (every config's step 0)", *start]] + [
        [_label(data, n), *(cell(n, s) for s in seeds)] for n in names
    ]
    return [
        "## Per seed",
        "",
        "Greedy / mean@8 on the held-out problems: at the start, and at the last step of each config.",
        "",
        reporting.md_table(["config", *(f"seed {s}" for s in seeds)], rows, "l" + "r" * len(seeds)),
        "",
    ]
