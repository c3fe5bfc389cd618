"""Step-time and peak-memory overhead of `DAPOTrainer` against TRL's own `GRPOTrainer(loss_type="dapo")`.

Both trainers run the identical tiny configuration (same model folder, dataset, reward, seed and hyper-parameters);
`DAPOTrainer` has `dynamic_sampling=False` and `loss_agg_mode="token-mean"`, so its loss is the same math as TRL's
`loss_type="dapo"` (DAPOTrainer counts each optimizer step's loss tokens exactly, TRL averages them over the
generation batch: the same token-mean, only the denominator's bookkeeping differs).

Every run is a fresh subprocess (so `ru_maxrss` is that run's peak RSS) and runs are interleaved: repetition `r` runs
GRPO then DAPO for even `r` and DAPO then GRPO for odd `r`, so slow drifts of a shared machine hit both alike.

Usage:

    python benchmarks/overhead.py                       # default: ~4 minutes, writes benchmarks/OVERHEAD.md
    python benchmarks/overhead.py --quick               # CI smoke, < 1 minute, report in the temp dir
    python benchmarks/overhead.py --reps 8 --steps 40
    python benchmarks/overhead.py --render benchmarks/OVERHEAD.json  # only re-render the report from its results

The raw results go to the JSON next to the report (benchmarks/OVERHEAD.json); see benchmarks/reporting.py.

Timing: a `TrainerCallback` takes `time.perf_counter()` at `on_step_begin` and `on_step_end` of every optimizer step;
the first `WARMUP_STEPS` steps (one generation cycle) are dropped. With `steps_per_generation=2` step times alternate
between a step that generates (and computes old log-probs) and a step that only trains on the buffered batch, so the
headline "step time" of a run is the median over its generation cycles of the cycle's mean step time; the medians of
the two kinds of step are reported too. Inside each step the time is split by wrapping (on the trainer instance, for
both trainers alike) `_generate_and_score_completions` (generation + rewards + old log-probs), `_prepare_inputs`
(whose excess over generation is batch buffering, plus DAPO's per-step token counts) and `compute_loss` (loss
forward); the rest is backward, optimizer step and `Trainer` glue. Process CPU time per step is reported as well: it
is less sensitive than wall time to other jobs on a shared machine.

Threads: each run uses one torch thread by default (`--threads 1`, also `OMP_NUM_THREADS`): on a 2-core machine that
other jobs share, two OpenMP threads can be slowed down several-fold by a single competing process, which swamps a
few-percent comparison; `--threads 0` keeps torch's default.

Memory: `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end of each child is the whole process's peak (imports,
model, trainer); the RSS growth from just before `train()` to that peak isolates training.

Like for like: the two configs are compared field by field before running, and each run records the first
micro-batch's loss and token normalizer, so the report checks that both trainers trained the first step on the
identical batch with the same summed token loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reporting  # noqa: E402
from reporting import fmt_ms  # noqa: E402


WARMUP_STEPS = 2  # one generation cycle (steps_per_generation=2)
TRAINERS = ("grpo", "dapo")
STEP_GOAL, RSS_GOAL = 1.03, 1.05
# With one torch thread an uncontended run has wall time ~= process CPU time, and wall/CPU measures how much other jobs
# slowed it. Steady load slows both runs of a repetition alike and leaves their ratio fair; a repetition whose two
# runs' wall/CPU differ by more than this factor (load that came or went between them) is run again.
CONTENTION = 1.10

# Identical for both trainers. DAPOConfig's changed defaults (epsilon, epsilon_high, beta, mask_truncated_completions,
# loss_type) are all set explicitly so GRPOConfig gets the same values.
COMMON_CONFIG = {
    "per_device_train_batch_size": 16,
    "num_generations": 4,
    "max_completion_length": 24,
    "gradient_accumulation_steps": 1,
    "steps_per_generation": 2,
    "epsilon": 0.2,
    "epsilon_high": 0.28,
    "beta": 0.0,
    "mask_truncated_completions": True,
    "loss_type": "dapo",
    "learning_rate": 1e-4,
    "seed": 0,
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
}
DAPO_ONLY_CONFIG = {"dynamic_sampling": False, "loss_agg_mode": "token-mean"}
MODEL_SIZE = {"hidden_size": 64, "num_layers": 2}
NUM_PROMPTS = 256


# ---------------------------------------------------------------------------------------------------------- child


def digit_reward(completions, **kwargs):
    """Fraction of digits in each completion: cheap, deterministic, and varies within a group."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def make_dataset():
    from datasets import Dataset

    rng = random.Random(0)
    prompts = [f"{rng.randint(0, 99)}+{rng.randint(0, 99)}=" for _ in range(NUM_PROMPTS)]
    return Dataset.from_dict({"prompt": prompts})


def make_config(trainer: str, output_dir: str, max_steps: int):
    from trl import GRPOConfig

    from dapo_trl import DAPOConfig

    kwargs = {**COMMON_CONFIG, "output_dir": output_dir, "max_steps": max_steps}
    if trainer == "dapo":
        return DAPOConfig(**kwargs, **DAPO_ONLY_CONFIG)
    return GRPOConfig(**kwargs)


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_child(trainer_name: str, model_dir: str, steps: int, result_path: str, threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from dapo_trl import DAPOTrainer  # imported by both children: same import footprint

    t_imported = time.perf_counter()
    current: dict[str, float] = {}
    records: list[dict[str, float]] = []
    first_loss: dict[str, float] = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            current.clear()
            current["cpu_begin"] = time.process_time()
            current["begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            end = time.perf_counter()
            cpu_end = time.process_time()
            records.append(
                {
                    "step": end - current["begin"],
                    "cpu": cpu_end - current["cpu_begin"],
                    "generate": current.get("generate", 0.0),
                    "prepare": current.get("prepare", 0.0),
                    "loss": current.get("loss", 0.0),
                }
            )

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                current[name] = current.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    with tempfile.TemporaryDirectory(prefix=f"overhead-{trainer_name}-") as output_dir:
        args = make_config(trainer_name, output_dir, WARMUP_STEPS + steps)
        cls = DAPOTrainer if trainer_name == "dapo" else GRPOTrainer
        trainer = cls(
            model=model_dir,
            reward_funcs=digit_reward,
            args=args,
            train_dataset=make_dataset(),
            callbacks=[StepTimer()],
        )
        # Instance-level wrappers: the same on both trainers, nothing in dapo_trl or TRL is edited.
        trainer._generate_and_score_completions = timed("generate", trainer._generate_and_score_completions)
        trainer._prepare_inputs = timed("prepare", trainer._prepare_inputs)
        trainer.compute_loss = timed("loss", first_loss_recorder(trainer.compute_loss, first_loss))
        rss_before_train = current_rss_mib()
        peak_before_train = peak_rss_mib()
        t_train = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - t_train
        peak = peak_rss_mib()
        history = trainer.state.log_history

    def logged(key):
        return [entry[key] for entry in history[WARMUP_STEPS:] if key in entry]

    result = {
        "trainer": trainer_name,
        "class": cls.__name__,
        "records": records,
        "first_loss": first_loss,
        "peak_rss_mib": peak,
        "rss_before_train_mib": rss_before_train,
        "peak_before_train_mib": peak_before_train,
        "import_seconds": t_imported - t_start,
        "init_seconds": t_train - t_imported,
        "train_seconds": train_seconds,
        "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg()[0],
        "mean_completion_length": _mean(logged("completions/mean_length")),
        "clipped_ratio": _mean(logged("completions/clipped_ratio")),
        "trl_step_time": _mean(logged("step_time")),
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


def first_loss_recorder(compute_loss, store: dict):
    """Keep the first micro-batch's loss and token normalizer (a warm-up step: the `.item()` sync is not timed)."""

    def wrapper(model, inputs, *args, **kwargs):
        loss = compute_loss(model, inputs, *args, **kwargs)
        if not store:
            store["loss"] = loss.item()
            store["num_items_in_batch"] = float(inputs["num_items_in_batch"])
            store["completion_ids_sum"] = float(inputs["completion_ids"].sum())
        return loss

    return wrapper


def first_step_token_loss(result: dict) -> float:
    """Summed token loss of the first micro-batch, undoing each trainer's denominator.

    TRL (`loss_type="dapo"`) divides by `num_items_in_batch` (tokens of the whole generation batch) scaled by
    `gradient_accumulation_steps / steps_per_generation`; DAPOTrainer divides by the exact tokens of the optimizer step.
    """
    first = result["first_loss"]
    if result["trainer"] == "dapo":
        return first["loss"] * first["num_items_in_batch"]
    scale = COMMON_CONFIG["gradient_accumulation_steps"] / COMMON_CONFIG["steps_per_generation"]
    return first["loss"] * first["num_items_in_batch"] * scale


def _mean(values):
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------- parent


def run_one(trainer: str, model_dir: str, steps: int, threads: int, workdir: str, tag: str, timeout: float) -> dict:
    result_path = os.path.join(workdir, f"{tag}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", trainer, "--model", model_dir]
    cmd += ["--steps", str(steps), "--threads", str(threads), "--result", result_path]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    for attempt in range(2):  # one retry: a run can fail on a transient cause (e.g. the venv changing under it)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode == 0 and os.path.exists(result_path):
            with open(result_path) as f:
                return json.load(f)
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        print(f"{trainer} run {tag} failed with exit code {proc.returncode}" + (", retrying" if not attempt else ""))
    raise RuntimeError(f"{trainer} run {tag} failed twice")


def summarize_run(result: dict) -> dict:
    """Per-run medians over the measured steps (warm-up dropped)."""
    recs = result["records"][WARMUP_STEPS:]
    steps = [r["step"] for r in recs]
    # Generation cycles: (generating step, training-only step). Warm-up is a whole number of cycles.
    cycles = [(steps[i] + steps[i + 1]) / 2 for i in range(0, len(steps) - 1, 2)]
    cpu = [r["cpu"] for r in recs]
    cpu_cycles = [(cpu[i] + cpu[i + 1]) / 2 for i in range(0, len(cpu) - 1, 2)]
    gen_steps = [r for r in recs if r["generate"] > 0]
    train_steps = [r for r in recs if r["generate"] == 0]

    def med(values):
        return statistics.median(values) if values else float("nan")

    return {
        "step": med(cycles),
        "cpu_step": med(cpu_cycles),
        "step_fast": statistics.quantiles(cycles, n=10)[0] if len(cycles) >= 2 else med(cycles),
        "wall_per_cpu": med([w / c for w, c in zip(cycles, cpu_cycles) if c > 0]),
        "step_mean": statistics.fmean(steps) if steps else float("nan"),
        "gen_step": med([r["step"] for r in gen_steps]),
        "train_step": med([r["step"] for r in train_steps]),
        "generate": med([r["generate"] for r in gen_steps]),
        "prepare_extra": med([r["prepare"] - r["generate"] for r in recs]),
        "loss": med([r["loss"] for r in recs]),
        "rest": med([r["step"] - r["prepare"] - r["loss"] for r in recs]),
        "peak_rss": result["peak_rss_mib"],
        "train_rss": result["peak_rss_mib"] - result["rss_before_train_mib"],
        "mean_length": result["mean_completion_length"],
        "clipped_ratio": result["clipped_ratio"],
        "n_steps": len(steps),
        "loadavg": result["loadavg"],
        "first_token_loss": first_step_token_loss(result),
        "first_batch": result["first_loss"]["completion_ids_sum"],
    }


def check_configs_identical() -> list[str]:
    """Fields (other than DAPO's own knobs) whose value differs between the two configs: must be empty."""
    from dataclasses import fields

    from trl import GRPOConfig

    with tempfile.TemporaryDirectory() as out:
        grpo, dapo = make_config("grpo", out, 10), make_config("dapo", out, 10)
    names = {f.name for f in fields(GRPOConfig)}
    return sorted(n for n in names if n != "output_dir" and repr(getattr(grpo, n)) != repr(getattr(dapo, n)))


RATIO_KEYS = ("step", "step_fast", "cpu_step", "step_mean", "gen_step", "train_step", "generate", "loss", "rest")


def paired_ratios(runs: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Per-repetition DAPO/GRPO ratio of each timed metric and of the peak RSS."""
    return {k: [d[k] / g[k] for g, d in zip(runs["grpo"], runs["dapo"])] for k in (*RATIO_KEYS, "peak_rss")}


def median_wall_per_cpu(runs: dict[str, list[dict]]) -> float:
    """The median run's wall time over process CPU time (1.0: the run had a core to itself)."""
    return statistics.median(r["wall_per_cpu"] for name in TRAINERS for r in runs[name])


def is_contended(payload: dict) -> bool:
    """Did other jobs slow the runs (median wall/CPU above `CONTENTION`, meaningful with one torch thread)?"""
    return payload["settings"]["threads"] == 1 and median_wall_per_cpu(payload["runs"]) > CONTENTION


def med(rows: list[dict], key: str) -> float:
    """Median over repetitions of one per-run value."""
    return statistics.median(r[key] for r in rows)


def ratio_cells(ratios: dict[str, list[float]], key: str) -> tuple[str, str]:
    """The *ratio* (median of the per-repetition ratios) and *spread* (min / max) cells of a table row."""
    return f"{statistics.median(ratios[key]):.3f}", reporting.spread(ratios[key])


def render(payload: dict) -> str:
    """The report, from the results JSON that `main` wrote (`reporting.write_report`)."""
    runs, settings = payload["runs"], payload["settings"]
    ratios = paired_ratios(runs)
    g, d = runs["grpo"], runs["dapo"]

    def goal_row(label, key, goal, show, bold=False):
        ratio, spread = ratio_cells(ratios, key)
        ratio = f"**{ratio}**" if bold else ratio
        met = "(met)" if statistics.median(ratios[key]) <= goal else "(NOT met)"
        return [label, show(med(g, key)), show(med(d, key)), ratio, spread, f"<= {goal} {met}"]

    mib = "{:.1f}".format
    headers = ["metric", "GRPOTrainer", "DAPOTrainer", "ratio DAPO/GRPO", "spread (min / max)"]
    result = [
        goal_row(
            "step time, ms (median over generation cycles of the cycle's mean step)", "step", STEP_GOAL, fmt_ms, True
        ),
        goal_row(
            "step time, fastest decile of cycles, ms (less affected by other jobs)", "step_fast", STEP_GOAL, fmt_ms
        ),
        goal_row("process CPU time per step, ms (cycle median)", "cpu_step", STEP_GOAL, fmt_ms),
        goal_row("peak RSS, MiB (ru_maxrss)", "peak_rss", RSS_GOAL, mib, True),
    ]
    lines = reporting.results_header('DAPOTrainer overhead vs TRL GRPOTrainer(loss_type="dapo")', payload)
    lines += [
        "## Result",
        "",
        f"{settings['reps']} repetitions, each one fresh subprocess per trainer, order alternating (GRPO first on "
        f"even repetitions); {settings['steps']} measured optimizer steps per run after {WARMUP_STEPS} warm-up steps. "
        "Values are medians over repetitions of per-run medians; *ratio* is the median of the per-repetition "
        "DAPO/GRPO ratios and *spread* their min / max.",
        "",
        reporting.md_table([*headers, "goal"], result, align="lrrrrl"),
    ]
    if is_contended(payload):
        lines += [
            "",
            f"**Contended run**: the median run's wall/CPU ratio is {median_wall_per_cpu(runs):.2f} (1.00 = a core to "
            "itself): other jobs shared the CPU, so wall-time ratios carry their noise; see the Reading.",
        ]
    lines += ["", "Breakdown (medians; the generation split is per generating step, the others per step):", ""]
    lines.append(reporting.md_table(headers, breakdown_rows(g, d, ratios), align="lrrrr"))
    lines += [
        "",
        "Per repetition (ms / MiB; wall/CPU is the run's median wall time over process CPU time, ~1.0 when the "
        "run had a core to itself):",
        "",
        repetition_table(g, d, ratios),
        "",
        *setup_lines(payload),
        "",
        "## Reading",
        "",
        reading(runs, ratios, smoke=is_smoke(settings), contended=is_contended(payload)),
        "",
    ]
    return "\n".join(lines)


def breakdown_rows(g: list[dict], d: list[dict], ratios: dict[str, list[float]]) -> list[list[str]]:
    detail = [
        ("step time, mean of all measured steps (outliers included), ms", "step_mean", True),
        ("generating step, ms", "gen_step", True),
        ("training-only step, ms", "train_step", True),
        ("&nbsp;&nbsp;generation + rewards + old log-probs, ms", "generate", True),
        ("&nbsp;&nbsp;`_prepare_inputs` beyond generation, ms", "prepare_extra", True),
        ("&nbsp;&nbsp;`compute_loss` (loss forward), ms", "loss", True),
        ("&nbsp;&nbsp;rest: backward, optimizer, Trainer glue, ms", "rest", True),
        ("RSS growth during `train()`, MiB", "train_rss", False),
    ]
    rows = []
    for label, key, is_time in detail:
        show = fmt_ms if is_time else "{:.1f}".format
        rows.append(
            [label, show(med(g, key)), show(med(d, key)), *(ratio_cells(ratios, key) if key in ratios else ("-", "-"))]
        )
    for label, key, fmt in (
        ("mean completion length, tokens", "mean_length", ".1f"),
        ("truncated (masked) completions", "clipped_ratio", ".2f"),
    ):
        rows.append([label, format(med(g, key), fmt), format(med(d, key), fmt), "-", "-"])
    return rows


def repetition_table(g: list[dict], d: list[dict], ratios: dict) -> str:
    headers = ["rep", "order", "GRPO step", "DAPO step", "step ratio", "GRPO peak RSS", "DAPO peak RSS", "RSS ratio"]
    headers += ["wall/CPU (GRPO / DAPO)", "1-min load avg incl. this run (GRPO / DAPO)"]
    rows = [
        [r, "GRPO, DAPO" if r % 2 == 0 else "DAPO, GRPO", fmt_ms(g[r]["step"]), fmt_ms(d[r]["step"])]
        + [f"{ratios['step'][r]:.3f}", f"{g[r]['peak_rss']:.1f}", f"{d[r]['peak_rss']:.1f}"]
        + [f"{ratios['peak_rss'][r]:.3f}", f"{g[r]['wall_per_cpu']:.2f} / {d[r]['wall_per_cpu']:.2f}"]
        + [f"{g[r]['loadavg']:.1f} / {d[r]['loadavg']:.1f}"]
        for r in range(len(g))
    ]
    return reporting.md_table(headers, rows, align="rlrrrrrrrr")


def setup_lines(payload: dict) -> list[str]:
    retried, max_retries = payload["retried"], payload["settings"]["max_retries"]
    return [
        "## Setup",
        "",
        "- Shared machine: other jobs may run concurrently (see the load averages above and per repetition). "
        "deepspeed, when installed (see Versions), is imported by TRL and accelerate for both trainers alike.",
        f"- Model: `dapo_trl.testing.save_tiny_model(hidden_size={MODEL_SIZE['hidden_size']}, "
        f"num_layers={MODEL_SIZE['num_layers']})` (Qwen2, char tokenizer, {payload['params']:,} parameters), "
        "float32, CPU; the same folder for both trainers.",
        f"- Data: {NUM_PROMPTS} prompts `a+b=` (seeded); reward: fraction of digits in the completion.",
        "- Config (both): " + ", ".join(f"`{k}={v!r}`" for k, v in COMMON_CONFIG.items()) + ".",
        "- DAPOTrainer only: " + ", ".join(f"`{k}={v!r}`" for k, v in DAPO_ONLY_CONFIG.items()) + ".",
        f"- Config check: GRPOConfig fields that differ between the two configs: {payload['config_diff'] or 'none'}.",
        "- Timing: `TrainerCallback` `on_step_begin` -> `on_step_end` (`time.perf_counter`); data loading and "
        "logging fall outside. Memory: `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end of each child (the "
        "whole process: imports, model, trainer), and the growth of RSS from just before `train()` to that peak.",
        "- Contention: with one torch thread, a run's median wall/CPU ratio is ~1.0 when it had a core to itself and "
        "grows as other jobs slow it. Steady load slows both runs of a repetition alike, which keeps their ratio "
        f"fair; a repetition whose two runs' wall/CPU differ by more than {CONTENTION}x is run again (both "
        f"trainers, at most {max_retries} re-runs in total) and the most balanced attempt is kept. Re-runs: "
        + (", ".join(f"repetition {r} x{retried.count(r)}" for r in sorted(set(retried))) if retried else "none")
        + ".",
    ]


def is_smoke(settings: dict) -> bool:
    return settings["quick"] or settings["steps"] < 40 or settings["reps"] < 3


# Two-sided 95% Student t quantiles by degrees of freedom (the largest key <= df is used; 1.96 beyond 30).
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 12: 2.18}
_T95.update({15: 2.13, 20: 2.09, 30: 2.04})


def ratio_interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of paired ratios with a 95% t-interval on the log scale (nan interval for one pair)."""
    logs = [math.log(r) for r in ratios]
    center = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(center), math.nan, math.nan
    df = len(logs) - 1
    t = 1.96 if df > 30 else _T95[max(k for k in _T95 if k <= df)]
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(center), math.exp(center - half), math.exp(center + half)


def same_math_check(runs) -> tuple[bool, float]:
    """(identical first batch in every repetition, max relative difference of the first summed token loss)."""
    same_batch = all(g["first_batch"] == d["first_batch"] for g, d in zip(runs["grpo"], runs["dapo"]))
    diff = max(
        abs(d["first_token_loss"] - g["first_token_loss"]) / max(abs(g["first_token_loss"]), 1e-12)
        for g, d in zip(runs["grpo"], runs["dapo"])
    )
    return same_batch, diff


def reading(runs, ratios, smoke: bool = False, contended: bool = False) -> str:
    step = ratios["step"]
    rss = ratios["peak_rss"]
    med_step, med_rss = statistics.median(step), statistics.median(rss)
    g, d = runs["grpo"], runs["dapo"]
    parts = []
    if smoke:
        parts.append(
            "- **Smoke run** (`--quick` or very few steps/repetitions): it checks that the benchmark runs; its "
            "numbers are too noisy to judge the goals. Use the default settings for that."
        )
    verdict = "within" if med_step <= STEP_GOAL else "above"
    geo, lo, hi = ratio_interval(step)
    interval = f"; geometric mean {geo:.3f}, 95% interval {lo:.3f}-{hi:.3f}" if len(step) > 1 else ""
    parts.append(
        f"- Step time: DAPOTrainer/GRPOTrainer = {med_step:.3f} (median of {len(step)} paired repetition{'s' if len(step) > 1 else ''}, spread "
        f"{reporting.spread(step, sep='-')}{interval}), {verdict} the {STEP_GOAL} goal. "
        + (
            "Single repetitions swing by a few percent either way (shared 2-core machine), and the spread straddles "
            "1.0: no overhead is resolved at this precision."
            if min(step) < 1.0 < max(step)
            else f"Every repetition has DAPOTrainer {'slower' if min(step) > 1.0 else 'faster'} than GRPOTrainer."
        )
    )
    fast, cpu = statistics.median(ratios["step_fast"]), statistics.median(ratios["cpu_step"])
    if contended:
        parts.append(
            f"- **Other jobs shared the CPU during this run** (wall/CPU well above 1.0, see the per-repetition "
            "table): the two runs of a repetition were slowed by different amounts, which the wall-time ratio "
            f"above reflects as much as the trainers. Less affected, though not immune: the fastest-decile ratio "
            f"({fast:.3f}; intermittent interference spares some cycles) and the CPU-time ratio ({cpu:.3f}; a shared "
            "core still slows the CPU work itself, through caches). Re-run on a quiet machine before reading a few "
            "percent into any of them."
        )
    else:
        parts.append(
            f"- Cross-checks: fastest-decile ratio {fast:.3f}, process CPU time ratio {cpu:.3f} (wall/CPU stayed "
            "near 1.0: the runs had a core to themselves)."
        )
    loss_g, loss_d = statistics.median(r["loss"] for r in g), statistics.median(r["loss"] for r in d)
    prep_g, prep_d = (statistics.median(r["prepare_extra"] for r in rows) for rows in (g, d))
    gen_g, gen_d = statistics.median(r["generate"] for r in g), statistics.median(r["generate"] for r in d)
    parts.append(
        f"- Where the time goes: generation (+ rewards + old log-probs) {fmt_ms(gen_g)} vs {fmt_ms(gen_d)} ms per "
        f"generating step (the same TRL code in both); `compute_loss` {fmt_ms(loss_g)} vs {fmt_ms(loss_d)} ms; "
        f"`_prepare_inputs` beyond generation {fmt_ms(prep_g)} vs {fmt_ms(prep_d)} ms (DAPOTrainer recounts the "
        "loss tokens of each optimizer step once per generation batch, one `reduce`). Per micro-batch, "
        "DAPOTrainer's `compute_loss` logs its statistics with one stacked `reduce` and one `.tolist()`, where "
        "TRL's `_compute_loss` (loss_type='dapo') does 4 `reduce`s, 2 `gather`s and 6 `.item()` syncs; on one "
        "process these only copy tensors, so both cost microseconds here, and with several processes DAPOTrainer "
        "issues fewer collectives than TRL, not more."
    )
    len_g, len_d = statistics.median(r["mean_length"] for r in g), statistics.median(r["mean_length"] for r in d)
    same_batch, diff = same_math_check(runs)
    check = (
        f"In every repetition the first optimizer step trained on the identical batch (same completion ids) and the "
        f"summed token loss, each trainer's denominator undone, agrees to {diff:.1e} relative: the same math."
        if same_batch and diff < 1e-4
        else f"ODD: the first step's batch identical in every repetition: {same_batch}; summed token loss max "
        f"relative difference {diff:.1e} (expected identical batches and < 1e-4)."
    )
    parts.append(
        f"- Like for like: {check[0].lower()}{check[1:]} The denominators differ by design (DAPOTrainer: the exact loss tokens of the "
        "optimizer step; TRL: the generation batch's tokens averaged over its `steps_per_generation` steps), so "
        "the weights, and with them the sampled completions, drift apart after the first update; mean completion "
        f"length {len_g:.1f} (GRPO) vs {len_d:.1f} (DAPO) tokens, so the workloads stay comparable."
    )
    verdict = "within" if med_rss <= RSS_GOAL else "above"
    tr_g, tr_d = statistics.median(r["train_rss"] for r in g), statistics.median(r["train_rss"] for r in d)
    parts.append(
        f"- Memory: peak RSS ratio {med_rss:.3f} (spread {reporting.spread(rss, sep='-')}), {verdict} the {RSS_GOAL} "
        f"goal. The peak is dominated by the interpreter, torch, transformers and TRL (both children import "
        f"dapo_trl, so the import footprint is the same); RSS growth during `train()` is {tr_g:.1f} vs {tr_d:.1f} "
        "MiB."
    )
    parts.append(
        "- Scope: a tiny model on CPU is the worst case for a relative Python-side overhead (every extra call is "
        "large next to ~0.1M-parameter matmuls); with a real model and GPU the fixed per-step costs shrink "
        "relatively. Dynamic sampling (DAPOTrainer's default) is off here: it changes how many completions are "
        "generated, which is the algorithm, not overhead."
    )
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="paired repetitions (default 10, --quick 1)")
    parser.add_argument(
        "--steps", type=int, default=None, help="measured optimizer steps per run (default 160, --quick 4)"
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 repetition, 4 steps")
    parser.add_argument(
        "--out",
        default=None,
        help="report path (default benchmarks/OVERHEAD.md; with --quick a file in the temp dir, so a smoke run never "
        "overwrites the real results)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (default 1: robust to a shared CPU; 0 = torch's)"
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="re-runs, in total, of repetitions whose two runs were slowed unequally by other jobs (wall/CPU differing "
        f"by more than {CONTENTION}x; only with --threads 1; the most balanced attempt is kept)",
    )
    parser.add_argument("--render", help="only re-render the report from a results JSON this script wrote (to --out)")
    parser.add_argument("--child", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        run_child(args.child, args.model, args.steps, args.result, args.threads)
        return 0
    if args.render:
        print(f"wrote {reporting.render_from_json(args.render, render, args.out)}")
        return 0

    args.reps = args.reps if args.reps is not None else (1 if args.quick else 10)
    args.steps = args.steps if args.steps is not None else (4 if args.quick else 160)
    if args.out is None:
        folder = tempfile.gettempdir() if args.quick else os.path.dirname(os.path.abspath(__file__))
        args.out = os.path.join(folder, "OVERHEAD.quick.md" if args.quick else "OVERHEAD.md")
    if args.reps < 1 or args.steps < 2 or args.steps % 2:
        parser.error("--reps must be >= 1 and --steps an even number >= 2 (whole generation cycles)")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0, meta = time.perf_counter(), reporting.machine_meta()
    from dapo_trl.testing import save_tiny_model

    config_diff = check_configs_identical()
    if config_diff:
        raise SystemExit(f"the two configs differ in {config_diff}: the comparison would not be like for like")

    runs: dict[str, list[dict]] = {name: [] for name in TRAINERS}
    retried: list[int] = []
    with tempfile.TemporaryDirectory(prefix="dapo-overhead-") as workdir:
        model_dir = save_tiny_model(os.path.join(workdir, "tiny-model"), **MODEL_SIZE)
        from transformers import AutoModelForCausalLM

        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        retries_left = args.max_retries if args.threads == 1 else 0
        for r in range(args.reps):
            order = TRAINERS if r % 2 == 0 else TRAINERS[::-1]
            best = None
            for attempt in range(1 + retries_left):
                pair = {}
                for name in order:
                    t_run = time.perf_counter()
                    tag = f"{name}-{r}-{attempt}"
                    result = run_one(name, model_dir, args.steps, args.threads, workdir, tag, timeout=600)
                    pair[name] = summarize_run(result)
                    pair[name]["threads"] = result["torch_threads"]
                    print(
                        f"rep {r}{f' retry {attempt}' if attempt else ''} {name}: step {fmt_ms(pair[name]['step'])} "
                        f"ms (wall/CPU {pair[name]['wall_per_cpu']:.2f}), peak RSS {pair[name]['peak_rss']:.1f} MiB, "
                        f"import {result['import_seconds']:.1f} s, train {result['train_seconds']:.1f} s, "
                        f"run {time.perf_counter() - t_run:.1f} s",
                        flush=True,
                    )
                contention = [pair[name]["wall_per_cpu"] for name in TRAINERS]
                imbalance = max(contention) / min(contention)
                if best is None or imbalance < best[0]:
                    best = (imbalance, pair)
                if args.threads != 1 or imbalance <= CONTENTION or retries_left == 0:
                    break
                retries_left -= 1
                retried.append(r)
            for name in TRAINERS:
                runs[name].append(best[1][name])

    meta["torch_threads"] = runs["grpo"][0]["threads"]  # the children's, where the measured work ran
    meta["loadavg_end"] = reporting.load_average()
    payload = {
        "meta": meta,
        "command": reporting.command_line(__file__, argv)
        + f"\n# effective: --reps {args.reps} --steps {args.steps} --threads {args.threads}",
        "wall_seconds": time.perf_counter() - t0,
        "settings": {
            "reps": args.reps,
            "steps": args.steps,
            "threads": args.threads,
            "quick": args.quick,
            "max_retries": args.max_retries if args.threads == 1 else 0,
        },
        "params": params,
        "config_diff": config_diff,
        "retried": retried,
        "runs": runs,
    }
    reporting.write_report(args.out, payload, render)
    ratios = paired_ratios(runs)
    step, rss = statistics.median(ratios["step"]), statistics.median(ratios["peak_rss"])
    print(
        f"\nstep time ratio DAPO/GRPO {step:.3f} (spread {reporting.spread(ratios['step'], sep='-')}, goal "
        f"<= {STEP_GOAL}); peak RSS ratio {rss:.3f} (spread {reporting.spread(ratios['peak_rss'], sep='-')}, goal "
        f"<= {RSS_GOAL}); {args.reps} reps; wall {payload['wall_seconds']:.0f} s; wrote {args.out} and its .json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
