"""Learning efficiency of full DAPO (`DAPOTrainer`) against TRL's own `GRPOTrainer` (plain GRPO) on the tiny task.

Task and model: the offline `--preset tiny` path of `recipes/gsm8k.py` (tiny character-level Qwen2, 3-term sums,
`prepare_tiny`: warm start with 70% "early answer" solutions, held-out greedy accuracy on 200 problems). For every
seed the warm start runs ONCE and is saved to a folder; both trainers load that folder, so they start from identical
weights, train on the same prompts with the same seed, learning rate, batch and number of optimizer steps.

- DAPO: `DAPOConfig` built by the recipe's own parser from `TINY_PRESET` (clip-higher 0.2/0.28, token-mean loss,
  overlong filtering, dynamic sampling on, lr 1e-4, 4 updates per rollout, 8 generations, batch 16, 24 new tokens).
- GRPO: `trl.GRPOConfig` with the same preset values and `loss_type="grpo"`, `epsilon=0.2`, `epsilon_high=None`
  (symmetric), `beta=0.0`, `mask_truncated_completions=False`; no dynamic sampling. The two configs are compared
  field by field and the differences are printed in the report.

Measurements (a `TrainerCallback.on_step_end` every `--eval-every` optimizer steps, under `torch.no_grad` via
`dapo_trl.data.greedy_accuracy`, which restores train mode): held-out greedy accuracy; generated completions and
generated completion tokens, counted exactly inside the reward function (every generated completion is scored once,
including the groups that dynamic sampling drops); TRL's `num_tokens` (`state.num_input_tokens_seen`, cumulative
prompt + completion tokens of every generation round). Greedy decoding consumes no random numbers, so evaluating
does not change the training run.

Usage:

    python benchmarks/compare_grpo.py                    # default: 3 seeds x 600 steps, writes benchmarks/RESULTS.md
    python benchmarks/compare_grpo.py --quick            # CI smoke (< 2 min): 1 seed, 30 steps, report in temp dir
    python benchmarks/compare_grpo.py --with-overhead    # also runs `benchmarks/overhead.py --quick`
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

import dapo_trl  # noqa: E402
from dapo_trl import DAPOTrainer  # noqa: E402
from dapo_trl.data import greedy_accuracy  # noqa: E402
from dapo_trl.rewards import gsm8k_accuracy  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAINERS = ("grpo", "dapo")
LABEL = {"grpo": "GRPO (trl.GRPOTrainer)", "dapo": "DAPO (DAPOTrainer)"}
GRPO_SETTINGS = {"loss_type": "grpo", "epsilon": 0.2, "epsilon_high": None, "beta": 0.0}
GRPO_SETTINGS["mask_truncated_completions"] = False
# Fields that legitimately differ between the two configs (paths, or the algorithm under test).
IGNORED_FIELDS = {"output_dir", "logging_dir", "run_name"}


def load_recipe():
    """`recipes/gsm8k.py` as a module: its TINY_PRESET, parser and `prepare_tiny` are used as they are."""
    spec = importlib.util.spec_from_file_location("gsm8k_recipe", os.path.join(ROOT, "recipes", "gsm8k.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------------------------------------- runs


class Counter:
    """Reward function wrapper that counts every generated completion, its tokens, and zero-variance groups."""

    def __init__(self, group: int):
        self.group = group
        self.completions = self.tokens = self.groups = self.constant_groups = 0

    def make_reward(self):
        def gsm8k_accuracy_counted(prompts=None, completions=None, completion_ids=None, **kwargs):
            rewards = gsm8k_accuracy(completions, **kwargs)
            self.completions += len(completions)
            self.tokens += sum(len(ids) for ids in completion_ids)
            for start in range(0, len(rewards), self.group):
                self.groups += 1
                self.constant_groups += len(set(rewards[start : start + self.group])) == 1
            return rewards

        gsm8k_accuracy_counted.__name__ = gsm8k_accuracy_counted.__qualname__ = "gsm8k_accuracy"
        return gsm8k_accuracy_counted


class EvalCallback(TrainerCallback):
    def __init__(self, tokenizer, test, every: int, max_new_tokens: int, counter: Counter, record: list):
        self.tokenizer, self.test, self.every, self.max_new_tokens = tokenizer, test, every, max_new_tokens
        self.counter, self.record, self.eval_seconds = counter, record, 0.0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every and state.global_step != state.max_steps:
            return
        start = time.perf_counter()
        accuracy = greedy_accuracy(model, self.tokenizer, self.test, max_new_tokens=self.max_new_tokens)
        self.eval_seconds += time.perf_counter() - start
        self.record.append(
            {
                "step": state.global_step,
                "accuracy": accuracy,
                "completions": self.counter.completions,
                "completion_tokens": self.counter.tokens,
                "num_tokens": int(state.num_input_tokens_seen),
            }
        )


def make_configs(recipe, seed: int, steps: int, workdir: str, eval_problems: int):
    argv = ["--preset", "tiny", "--seed", str(seed), "--max_steps", str(steps)]
    argv += ["--output_dir", os.path.join(workdir, f"seed{seed}", "dapo"), "--disable_tqdm", "True"]
    argv += ["--num_eval_problems", str(eval_problems)]
    script_args, dapo_args, _ = recipe.parse_args(argv)
    grpo_kwargs = dict(recipe.TINY_PRESET)
    grpo_kwargs.update(seed=seed, max_steps=steps, disable_tqdm=True, **GRPO_SETTINGS)
    grpo_kwargs["output_dir"] = os.path.join(workdir, f"seed{seed}", "grpo")
    grpo_args = GRPOConfig(**grpo_kwargs)
    return script_args, dapo_args, grpo_args


def config_differences(dapo_args, grpo_args) -> dict:
    grpo_fields = grpo_args.to_dict()
    dapo_fields = dapo_args.to_dict()
    return {
        key: (grpo_fields[key], dapo_fields.get(key))
        for key in sorted(grpo_fields)
        if key not in IGNORED_FIELDS and grpo_fields[key] != dapo_fields.get(key)
    }


def run_trainer(name, args, warm_dir, train, test, eval_every, max_new_tokens) -> dict:
    model = AutoModelForCausalLM.from_pretrained(warm_dir)
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    before = greedy_accuracy(model, tokenizer, test, max_new_tokens=max_new_tokens)
    counter = Counter(args.num_generations)
    record = [{"step": 0, "accuracy": before, "completions": 0, "completion_tokens": 0, "num_tokens": 0}]
    callback = EvalCallback(tokenizer, test, eval_every, max_new_tokens, counter, record)
    trainer_cls = DAPOTrainer if name == "dapo" else GRPOTrainer
    trainer = trainer_cls(
        model=model,
        reward_funcs=counter.make_reward(),
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    load_before = load_average()
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    steps = trainer.state.global_step
    return {
        "trainer": name,
        "steps": steps,
        "curve": record,
        "completions": counter.completions,
        "completion_tokens": counter.tokens,
        "num_tokens": int(trainer.state.num_input_tokens_seen),
        "groups": counter.groups,
        "constant_groups": counter.constant_groups,
        "trained_completions": steps * args.per_device_train_batch_size,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "eval_seconds": callback.eval_seconds,
        "load_before": load_before,
        "load_after": load_average(),
    }


def run_seed(recipe, seed, opts, workdir) -> dict:
    script_args, dapo_args, grpo_args = make_configs(recipe, seed, opts.steps, workdir, opts.eval_problems)
    torch.set_num_threads(opts.threads)
    start = time.perf_counter()
    model, tokenizer, train, test = recipe.prepare_tiny(script_args, dapo_args)  # warm start, once per seed
    warm_seconds = time.perf_counter() - start
    warm_dir = os.path.join(workdir, f"seed{seed}", "warm-start")
    model.save_pretrained(warm_dir)
    tokenizer.save_pretrained(warm_dir)
    del model
    max_new_tokens = script_args.eval_max_new_tokens or dapo_args.max_completion_length
    runs = {}
    order = TRAINERS if seed % 2 == 0 else TRAINERS[::-1]
    for name in order:
        args = dapo_args if name == "dapo" else grpo_args
        print(f"[seed {seed}] training {name} for {opts.steps} steps (load {load_average()})", flush=True)
        runs[name] = run_trainer(name, args, warm_dir, train, test, opts.eval_every, max_new_tokens)
        curve = runs[name]["curve"]
        print(
            f"[seed {seed}] {name}: accuracy {curve[0]['accuracy']:.1%} -> {curve[-1]['accuracy']:.1%}, "
            f"{runs[name]['completions']} completions, {runs[name]['train_seconds']:.0f}s",
            flush=True,
        )
    return {
        "seed": seed,
        "warm_seconds": warm_seconds,
        "order": list(order),
        "runs": runs,
        "differences": config_differences(dapo_args, grpo_args),
        "train_problems": len(train),
        "eval_problems": len(test),
        "sft": {
            "steps": script_args.sft_steps,
            "lr": script_args.sft_learning_rate,
            "early_answer_rate": script_args.sft_early_answer_rate,
        },
        "max_new_tokens": max_new_tokens,
    }


# ---------------------------------------------------------------------------------------------------------- report


def first_reach(curve: list[dict], target: float) -> dict | None:
    for point in curve:
        if point["accuracy"] >= target - 1e-9:
            return point
    return None


def at_budget(curve: list[dict], tokens: int) -> dict:
    """Last evaluation point whose generated completion tokens are within `tokens`."""
    return [p for p in curve if p["completion_tokens"] <= tokens][-1]


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def med_range(values: list, fmt=lambda v: f"{v:g}", missing: int = 0) -> str:
    if not values:
        return f"not reached ({missing} of {missing})" if missing else "-"
    text = fmt(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt(min(values))} - {fmt(max(values))})"
    if missing:
        text += f"; not reached in {missing}"
    return text


def kfmt(v: float) -> str:
    return f"{v / 1000:.1f}k"


def overhead_summary() -> list[str]:
    path = os.path.join(HERE, "OVERHEAD.md")
    if not os.path.exists(path):
        return ["- `benchmarks/OVERHEAD.md` not found: run `python benchmarks/overhead.py`."]
    with open(path) as f:
        text = f.read()
    lines = []
    generated = re.search(r"Generated by .*? on (.*?)\s*\(", text)
    rows = [line for line in text.splitlines() if line.startswith(("| step time, ms", "| peak RSS"))]
    lines.append(
        'Step time and memory of `DAPOTrainer` against TRL\'s `GRPOTrainer(loss_type="dapo")` (same loss, dynamic '
        "sampling off, so only the implementation is compared) are measured by `benchmarks/overhead.py`; "
        f"numbers from [OVERHEAD.md](OVERHEAD.md) (generated {generated.group(1) if generated else 'n/a'}):"
    )
    lines += ["", "| metric | GRPOTrainer | DAPOTrainer | ratio DAPO/GRPO | spread (min / max) | goal |"]
    lines += ["| --- | ---: | ---: | ---: | ---: | --- |", *rows, ""]
    return lines


def build_report(results: list[dict], opts, command: str, meta: dict) -> str:
    seeds = [r["seed"] for r in results]
    targets = opts.targets
    out = ["# DAPO vs GRPO: learning efficiency on the tiny arithmetic task", ""]
    out.append(f"Generated by `benchmarks/compare_grpo.py` on {meta['date']} (total wall time {meta['wall']:.0f} s).")
    out += ["", "Command:", "", "```", command, "```", ""]
    if meta.get("rendered_from"):
        out += [
            f"(This report was re-rendered from that run's raw results with `--from-json {meta['rendered_from']}`.)",
            "",
        ]

    # ---- setup
    first = results[0]
    out += ["## Setup", ""]
    out.append(
        f"- Machine: {os.cpu_count()} CPUs (`os.cpu_count()`), {platform.platform()}, Python "
        f"{platform.python_version()}, torch threads {opts.threads}; shared machine (other jobs ran concurrently). "
        f"Load average (1/5/15 min) at start: {meta['load_start']}; at end: {meta['load_end']}."
    )
    out.append(
        f"- Versions: torch {torch.__version__}, trl {trl.__version__}, transformers {transformers.__version__}, "
        f"dapo_trl {dapo_trl.__version__}."
    )
    out.append(
        f"- Task: `recipes/gsm8k.py --preset tiny` (`prepare_tiny`): tiny char-level Qwen2, {first['train_problems']} "
        f"training sums `a+b+c=` (terms 0-9), {first['eval_problems']} disjoint held-out problems, reward "
        "`gsm8k_accuracy` (1 if the `#### n` answer is right). Warm start: "
        f"{first['sft']['steps']} supervised steps (lr {first['sft']['lr']:g}) with early_answer_rate "
        f"{first['sft']['early_answer_rate']:g}, run ONCE per seed, saved to a folder and loaded by both trainers "
        "(the identical 'before' accuracy of the two trainers below confirms the same weights)."
    )
    out.append(
        f"- Seeds {seeds}: the seed sets the warm start, the train/held-out split and the trainer seed; within a seed "
        "everything but the algorithm is identical."
    )
    out.append(
        "- Shared settings (the tiny preset): lr 1e-4 constant, per_device_train_batch_size 16, steps_per_generation "
        "4 (4 optimizer updates per rollout of 64 completions = 8 prompts x 8 generations), num_generations 8, "
        f"temperature 1.0, max_completion_length 24, {opts.steps} optimizer steps, CPU fp32."
    )
    if opts.steps != 300:
        out.append(
            f"- Steps: the recipe's tiny preset trains 300 steps; this run trains {opts.steps} (both trainers), so "
            f"accuracy at step {opts.steps // 2} can be compared with accuracy at step {opts.steps} (the paper's "
            "'same accuracy in half the steps'); the curves below include step 300."
        )
    out.append(
        "- DAPO: `DAPOConfig` from the recipe's parser: epsilon 0.2 / epsilon_high 0.28 (clip-higher), "
        "`loss_agg_mode='token-mean'`, `mask_truncated_completions=True` (overlong filtering), beta 0, dynamic "
        "sampling on (`new_prompts`, adaptive rounds, `max_num_gen_batches=10`)."
    )
    out.append(
        "- GRPO: `trl.GRPOConfig(loss_type='grpo', epsilon=0.2, epsilon_high=None, beta=0.0, "
        "mask_truncated_completions=False)`, no dynamic sampling."
    )
    diffs = first["differences"]
    diff_text = ", ".join(f"`{k}`: {g!r} vs {d!r}" for k, (g, d) in diffs.items()) or "none"
    out.append(f"- Config check, GRPOConfig fields that differ (GRPO vs DAPO; paths ignored): {diff_text}.")
    out.append(
        f"- Evaluation: held-out greedy accuracy (`dapo_trl.data.greedy_accuracy`, {first['max_new_tokens']} new "
        f"tokens) before training and every {opts.eval_every} optimizer steps (`TrainerCallback.on_step_end`, "
        "no_grad, train mode restored). Greedy decoding uses no random numbers, so it does not perturb training."
    )
    out.append(
        "- Tokens: TRL's logged `num_tokens` is `state.num_input_tokens_seen`, the cumulative **prompt + completion** "
        "tokens of every generation call (for DAPO including the rounds whose groups dynamic sampling dropped). The "
        "tables report **generated completion tokens**, counted exactly in the reward function (each generated "
        "completion is scored once; `len(completion_ids)`, EOS included, the same count TRL's "
        "`completions/mean_length` averages); `num_tokens` is given too."
    )
    out.append("")

    # ---- per run
    out += ["## Per seed and trainer", ""]
    out.append(
        "*completions/step* = generated completions per optimizer step (every step trains on 16); *const. groups* "
        "= share of generated groups whose 8 rewards were all equal (zero advantage: no gradient in GRPO, dropped by "
        "DAPO); *wall* = `train()` time including the evaluations."
    )
    out.append("")
    header = "| seed | trainer | acc. before | acc. final | best acc. |"
    header += "".join(f" steps to {pct(t)} | gen. tokens to {pct(t)} |" for t in targets)
    header += " completions/step | gen. tokens total | `num_tokens` total | const. groups | wall s | eval s |"
    out += [header, "|" + " --- |" * 2 + " ---: |" * (header.count("|") - 3)]
    for result in results:
        for name in TRAINERS:
            run = result["runs"][name]
            curve = run["curve"]
            row = f"| {result['seed']} | {name} | {pct(curve[0]['accuracy'])} | {pct(curve[-1]['accuracy'])} |"
            row += f" {pct(max(p['accuracy'] for p in curve))} |"
            for t in targets:
                hit = first_reach(curve, t)
                row += f" {hit['step']} | {kfmt(hit['completion_tokens'])} |" if hit else " not reached | - |"
            row += f" {run['completions'] / run['steps']:.1f} | {kfmt(run['completion_tokens'])} |"
            row += f" {kfmt(run['num_tokens'])} | {run['constant_groups'] / max(run['groups'], 1):.0%} |"
            row += f" {run['train_seconds']:.0f} | {run['eval_seconds']:.0f} |"
            out.append(row)
    out.append("")

    # ---- summary
    out += ["## Summary across seeds", ""]
    out.append(
        f"Median over {len(results)} seed(s), (min - max) in brackets. Steps to a target have the resolution of the "
        f"evaluation interval ({opts.eval_every} steps); a run that never reaches it is listed as not reached."
    )
    out.append("")
    out += ["| metric | GRPO | DAPO | DAPO / GRPO per seed |", "| --- | ---: | ---: | ---: |"]

    def per_trainer(fn):
        return {name: [fn(r["runs"][name]) for r in results] for name in TRAINERS}

    def add_row(label, values, fmt, ratio=True):
        ratios = [d / g for g, d in zip(values["grpo"], values["dapo"]) if g is not None and d is not None and g]
        cells = []
        for name in TRAINERS:
            present = [v for v in values[name] if v is not None]
            cells.append(med_range(present, fmt, missing=len(values[name]) - len(present)))
        r = med_range(ratios, lambda v: f"{v:.2f}") if ratio else "-"
        if ratio and len(ratios) < len(results):
            r += f" ({len(ratios)} of {len(results)} seeds)"
        out.append(f"| {label} | {cells[0]} | {cells[1]} | {r} |")

    add_row("accuracy before", per_trainer(lambda run: run["curve"][0]["accuracy"]), pct, ratio=False)
    add_row(f"accuracy at the final step ({opts.steps})", per_trainer(lambda r: r["curve"][-1]["accuracy"]), pct)
    add_row("best accuracy seen", per_trainer(lambda run: max(p["accuracy"] for p in run["curve"])), pct)
    half = opts.steps // 2
    if all(any(p["step"] == half for p in r["runs"][n]["curve"]) for r in results for n in TRAINERS):
        acc_half = per_trainer(lambda run: next(p["accuracy"] for p in run["curve"] if p["step"] == half))
        add_row(f"accuracy at half the steps ({half})", acc_half, pct)
        pairs = [
            (
                next(p["accuracy"] for p in r["runs"]["dapo"]["curve"] if p["step"] == half),
                r["runs"]["grpo"]["curve"][-1]["accuracy"],
            )
            for r in results
        ]
        out.append(
            f"| DAPO at step {half} vs GRPO at step {opts.steps} (paper's claim: about equal) | "
            + med_range([g for _, g in pairs], pct)
            + " | "
            + med_range([d for d, _ in pairs], pct)
            + " | difference DAPO - GRPO, points: "
            + med_range([100 * (d - g) for d, g in pairs], lambda v: f"{v:+.1f}")
            + " |"
        )
    match = [match_final(r)[1] for r in results]
    out.append(
        "| DAPO: optimizer steps to reach GRPO's final accuracy | - | "
        + med_range([m["step"] for m in match if m], lambda v: f"{v:g}", missing=match.count(None))
        + f" | as share of {opts.steps} steps: "
        + med_range([m["step"] / opts.steps for m in match if m], lambda v: f"{v:.2f}")
        + " |"
    )
    for t in targets:
        steps = per_trainer(lambda run, t=t: (first_reach(run["curve"], t) or {}).get("step"))
        tokens = per_trainer(lambda run, t=t: (first_reach(run["curve"], t) or {}).get("completion_tokens"))
        comps = per_trainer(lambda run, t=t: (first_reach(run["curve"], t) or {}).get("completions"))
        add_row(f"optimizer steps to {pct(t)}", steps, lambda v: f"{v:g}")
        add_row(f"generated completion tokens to {pct(t)}", tokens, kfmt)
        add_row(f"generated completions to {pct(t)}", comps, lambda v: f"{v:,.0f}")
    add_row(
        "generated completions per optimizer step",
        per_trainer(lambda r: r["completions"] / r["steps"]),
        "{:.1f}".format,
    )
    add_row("generated completion tokens, whole run", per_trainer(lambda r: r["completion_tokens"]), kfmt)
    add_row(
        "mean completion length, tokens",
        per_trainer(lambda r: r["completion_tokens"] / r["completions"]),
        "{:.1f}".format,
    )
    add_row("zero-variance share of generated groups", per_trainer(lambda r: r["constant_groups"] / r["groups"]), pct)
    add_row("`train()` wall time, s (incl. evals; noisy)", per_trainer(lambda r: r["train_seconds"]), "{:.0f}".format)

    budget_rows = []
    for result in results:
        g, d = result["runs"]["grpo"], result["runs"]["dapo"]
        budget = min(g["completion_tokens"], d["completion_tokens"])
        pg, pd = at_budget(g["curve"], budget), at_budget(d["curve"], budget)
        budget_rows.append((result["seed"], budget, pg, pd))
    out += ["", "Equal generation budget: accuracy of each trainer at its last evaluation within the smaller of the "]
    out[-1] += "two runs' total generated completion tokens (DAPO generates more per optimizer step)."
    out += ["", "| seed | budget (completion tokens) | GRPO: step, accuracy | DAPO: step, accuracy |"]
    out += ["| ---: | ---: | ---: | ---: |"]
    for seed, budget, pg, pd in budget_rows:
        out.append(
            f"| {seed} | {kfmt(budget)} | {pg['step']}, {pct(pg['accuracy'])} | {pd['step']}, {pct(pd['accuracy'])} |"
        )
    out.append("")

    # ---- curves
    out += ["## Held-out accuracy curves", ""]
    out.append(
        "Greedy accuracy on the held-out problems at each evaluation (optimizer step); median across seeds last."
    )
    out.append("")
    cols = [(r["seed"], name) for name in TRAINERS for r in results]
    header = "| step | " + " | ".join(f"{name} s{seed}" for seed, name in cols)
    if len(results) > 1:
        header += " | GRPO median | DAPO median"
    out += [header + " |", "| ---: |" + " ---: |" * (header.count("|") - 1)]
    by_step = {}
    for result in results:
        for name in TRAINERS:
            for p in result["runs"][name]["curve"]:
                by_step.setdefault(p["step"], {})[(result["seed"], name)] = p["accuracy"]
    for step in sorted(by_step):
        values = by_step[step]
        row = f"| {step} | " + " | ".join(pct(values.get(c)) for c in cols)
        if len(results) > 1:
            for name in TRAINERS:
                present = [values[c] for c in cols if c[1] == name and c in values]
                row += f" | {pct(statistics.median(present)) if present else '-'}"
        out.append(row + " |")
    out.append("")

    # ---- token accounting check
    out += ["## Token accounting", ""]
    out.append(
        "`num_tokens` - generated completion tokens = prompt tokens; divided by the completions generated it gives "
        "the mean prompt length, which must be the same for both trainers (same prompt template):"
    )
    out.append("")
    for result in results:
        cells = []
        for name in TRAINERS:
            run = result["runs"][name]
            cells.append(f"{name} {(run['num_tokens'] - run['completion_tokens']) / run['completions']:.2f}")
        out.append(f"- seed {result['seed']}: " + ", ".join(cells) + " prompt tokens per completion.")
    out.append("")

    # ---- overhead
    out += ["## Overhead (step time, memory)", ""]
    out += overhead_summary()
    if meta.get("overhead_quick"):
        out += [f"`--with-overhead`: `overhead.py --quick` ran too; its report: `{meta['overhead_quick']}`.", ""]

    # ---- reading
    out += ["## Reading", ""]
    out += reading(results, opts, budget_rows)
    out.append("")
    return "\n".join(out)


def match_final(result) -> tuple[float, dict | None]:
    """GRPO's final accuracy, and the first DAPO evaluation that reaches it (`None` if none does)."""
    target = result["runs"]["grpo"]["curve"][-1]["accuracy"]
    return target, first_reach(result["runs"]["dapo"]["curve"], target)


def headline(results, opts) -> list[str]:
    """Plain verdict, seed by seed: step (and token) ratios where both trainers reached a target, else who did."""
    lines = []
    for t in opts.targets:
        cases, steps, tokens = [], [], []
        for r in results:
            g, d = first_reach(r["runs"]["grpo"]["curve"], t), first_reach(r["runs"]["dapo"]["curve"], t)
            if g and d and g["step"]:
                steps.append(d["step"] / g["step"])
                tokens.append(d["completion_tokens"] / g["completion_tokens"])
                cases.append(f"seed {r['seed']}: {d['step']} vs {g['step']} steps ({steps[-1]:.2f}x)")
            elif d:
                cases.append(f"seed {r['seed']}: only DAPO, at step {d['step']}")
            elif g:
                cases.append(f"seed {r['seed']}: only GRPO, at step {g['step']}")
            else:
                cases.append(f"seed {r['seed']}: neither")
        text = f"  - {pct(t)}: " + "; ".join(cases)
        if steps:
            verdict = "about half or fewer" if statistics.median(steps) <= 0.6 else "not about half"
            text += (
                f". Where both reached it, DAPO/GRPO steps median {statistics.median(steps):.2f} "
                f"(range {min(steps):.2f}-{max(steps):.2f}: {verdict}); generated tokens median "
                f"{statistics.median(tokens):.2f} (range {min(tokens):.2f}-{max(tokens):.2f})."
            )
        lines.append(text)
    matches = []
    for r in results:
        target, hit = match_final(r)
        where = f"at step {hit['step']} ({hit['step'] / opts.steps:.0%} of the steps)" if hit else "never"
        matches.append(f"seed {r['seed']}: GRPO's final {pct(target)} reached by DAPO {where}")
    lines.append("  - Same final accuracy (the paper's own framing): " + "; ".join(matches) + ".")
    half = opts.steps // 2
    fixed = []
    for r in results:
        d = [p for p in r["runs"]["dapo"]["curve"] if p["step"] == half]
        g = r["runs"]["grpo"]["curve"][-1]
        if d:
            diff = 100 * (d[0]["accuracy"] - g["accuracy"])
            fixed.append(f"seed {r['seed']}: {pct(d[0]['accuracy'])} vs {pct(g['accuracy'])} ({diff:+.1f} points)")
    if fixed:
        lines.append(
            f"  - Fixed points, DAPO at step {half} vs GRPO at step {opts.steps}: " + "; ".join(fixed) + ". The first "
            "step at which one noisy curve crosses a level is an optimistic estimate (an upward fluctuation counts, "
            "a later dip does not); this fixed-point comparison is the stricter one."
        )
    return lines


def reading(results, opts, budget_rows) -> list[str]:
    lines = []
    n = len(results)
    for t in opts.targets:
        ratios, tok_ratios, missing = [], [], []
        for r in results:
            g, d = first_reach(r["runs"]["grpo"]["curve"], t), first_reach(r["runs"]["dapo"]["curve"], t)
            if g and d:
                ratios.append(d["step"] / g["step"] if g["step"] else float("nan"))
                tok_ratios.append(d["completion_tokens"] / max(g["completion_tokens"], 1))
            else:
                missing.append((r["seed"], " and ".join(n for n, hit in (("GRPO", g), ("DAPO", d)) if not hit)))
        if ratios:
            text = (
                f"- Target {pct(t)}: DAPO/GRPO optimizer steps median {statistics.median(ratios):.2f} "
                f"(seeds: {', '.join(f'{x:.2f}' for x in ratios)}); generated completion tokens median "
                f"{statistics.median(tok_ratios):.2f} (seeds: {', '.join(f'{x:.2f}' for x in tok_ratios)})."
            )
        else:
            text = f"- Target {pct(t)}: not reached by both trainers in any seed."
        if missing:
            text += " Not reached: " + "; ".join(f"seed {s}: {who}" for s, who in missing) + "."
        lines.append(text)
    lines.append("- Headline check (DAPO paper: the same accuracy in about half the training steps), steps to target:")
    lines += headline(results, opts)
    finals = {name: [r["runs"][name]["curve"][-1]["accuracy"] for r in results] for name in TRAINERS}
    lines.append(
        f"- Final accuracy after {opts.steps} steps: GRPO {', '.join(pct(x) for x in finals['grpo'])}; DAPO "
        f"{', '.join(pct(x) for x in finals['dapo'])} (seeds {[r['seed'] for r in results]})."
    )
    cps = {name: [r["runs"][name]["completions"] / r["runs"][name]["steps"] for r in results] for name in TRAINERS}
    lines.append(
        f"- Generation cost: DAPO generated {statistics.median(cps['dapo']):.1f} completions per optimizer step "
        f"(median) against GRPO's {statistics.median(cps['grpo']):.1f} (GRPO: 64 per rollout of 4 steps; above 16 "
        "only when max_steps cuts the last rollout short): dynamic sampling keeps generating until every "
        "trained group has mixed rewards, so a comparison per generated token weighs DAPO's steps by that factor."
    )
    lines.append(
        "- Equal generation budget: "
        + "; ".join(f"seed {s}: GRPO {pct(g['accuracy'])} vs DAPO {pct(d['accuracy'])}" for s, _, g, d in budget_rows)
        + "."
    )
    lines.append(
        f"- Resolution: {n} seed(s), {opts.eval_every}-step evaluation grid, {opts.eval_problems} held-out problems "
        f"(one problem = {100 / opts.eval_problems:.1f} accuracy points); differences of a few points between "
        "single runs are within noise."
    )
    return lines


# ---------------------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--quick: 0)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 600, --quick 30)")
    parser.add_argument("--eval-every", type=int, default=None, help="default 10 (--quick 10)")
    parser.add_argument("--eval-problems", type=int, default=None, help="held-out problems (default 200, --quick 40)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.4, 0.6, 0.8], help="accuracy targets")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 seed, 30 steps, 40 eval problems")
    parser.add_argument("--with-overhead", action="store_true", help="also run `benchmarks/overhead.py --quick`")
    parser.add_argument("--out", default=None, help="report path (default benchmarks/RESULTS.md; --quick: temp)")
    parser.add_argument("--workdir", default=None, help="warm-start folders and outputs (default: temp dir)")
    parser.add_argument(
        "--results-json", default=None, help="raw results (default: compare_grpo_results.json in the temp dir)"
    )
    parser.add_argument("--from-json", default=None, help="only re-render the report from a --results-json file")
    opts = parser.parse_args(argv)
    opts.results_json = opts.results_json or os.path.join(
        tempfile.gettempdir(), "compare_grpo_quick_results.json" if opts.quick else "compare_grpo_results.json"
    )
    opts.seeds = opts.seeds or ([0] if opts.quick else [0, 1, 2])
    opts.steps = opts.steps or (30 if opts.quick else 600)
    opts.eval_every = opts.eval_every or 10
    opts.eval_problems = opts.eval_problems or (40 if opts.quick else 200)
    if opts.out is None:
        opts.out = (
            os.path.join(tempfile.gettempdir(), "compare_grpo_quick.md")
            if opts.quick
            else os.path.join(HERE, "RESULTS.md")
        )

    torch.set_num_threads(opts.threads)
    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    command = "python benchmarks/compare_grpo.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": load_average(),
    }
    start = time.perf_counter()
    recipe = load_recipe()
    own_workdir = opts.workdir is None
    workdir = opts.workdir or tempfile.mkdtemp(prefix="compare_grpo_")
    results = []
    if opts.from_json:  # re-render a report from the raw results of an earlier run
        with open(opts.from_json) as f:
            saved = json.load(f)
        results, meta = saved["results"], saved["meta"]
        command = saved["command"]
        meta["rendered_from"] = opts.from_json
        for key in ("seeds", "steps", "eval_every", "eval_problems", "threads"):
            setattr(opts, key, saved["opts"][key])
    try:
        for seed in [] if opts.from_json else opts.seeds:
            results.append(run_seed(recipe, seed, opts, workdir))
            with open(opts.results_json, "w") as f:
                json.dump({"results": results, "meta": meta, "command": command, "opts": vars(opts)}, f, indent=1)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if opts.with_overhead:
        quick_out = os.path.join(tempfile.gettempdir(), "overhead_quick_from_compare_grpo.md")
        subprocess.run([sys.executable, os.path.join(HERE, "overhead.py"), "--quick", "--out", quick_out], check=True)
        meta["overhead_quick"] = quick_out
    if not opts.from_json:
        meta["wall"] = time.perf_counter() - start
        meta["load_end"] = load_average()
        with open(opts.results_json, "w") as f:
            json.dump({"results": results, "meta": meta, "command": command, "opts": vars(opts)}, f, indent=1)
    report = build_report(results, opts, command.strip(), meta)
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w") as f:
        f.write(report)
    print(report)
    print(f"\nwrote {opts.out} ({meta['wall']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
