"""DAPO's ablation in miniature: does each part of DAPO earn its place?

The paper (AIME24, Qwen2.5-32B) adds DAPO's parts one at a time to naive GRPO: +overlong filtering, +clip-higher,
+soft overlong punishment, +token-level loss, +dynamic sampling. This script reruns that progression on a task built
for those parts to have something to act on, on a CPU, with several seeds:

- Task (`dapo_trl.data.arithmetic_dataset(num_terms=TASK["num_terms"])`): sums of 2 to 6 one-digit terms, solved one
  addition per line with running partial sums, so a correct solution's length grows with the number of terms; the
  completion limit is shorter than the longest correct solutions (truncation happens); the warm start is a tiny
  character-level Qwen2 trained on a sloppy SFT set (half the solutions stop after the first addition), so at the
  start many groups are all wrong (long sums) or all right (short ones). The report measures these properties.
- Configs (`CONFIGS`): TRL's own GRPOTrainer (loss_type "grpo", symmetric clip 0.2), then DAPOTrainer with the parts
  switched on one by one, ending at DAPOTrainer's defaults (+ the soft overlong buffer), plus verl-style fixed rounds.
  Every config trains from the same warm start per seed, on the same prompts, for the same optimizer steps.
- Measures: held-out greedy accuracy and mean@8 (sampled, temperature 1) every `eval_every` steps, completion tokens
  generated (counted in the reward function, dropped groups included), truncation, zero-variance share of the
  generated groups, completion lengths, TRL's logged token entropy of the trained batch.

Usage:

    python benchmarks/ablation.py                  # full run: writes benchmarks/ABLATION.{md,json} and ablation.png
    python benchmarks/ablation.py --quick          # smoke run (a few minutes): 2 seeds, a few steps, temp dir
    python benchmarks/ablation.py --render benchmarks/ABLATION.json   # re-render the report from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ablation_report  # noqa: E402
import reporting  # noqa: E402


# The task, fixed before any config was run (chosen by its properties, not by who wins on it).
TASK = {
    "num_terms": (2, 6),
    "max_value": 9,
    "n_train": 2000,
    "n_test": 100,
    "early_answer_rate": 0.5,
    "sft_steps": 700,
    "sft_learning_rate": 3e-3,
    "hidden_size": 64,
    "max_completion_length": 44,  # the longest correct solutions (6 terms) need 38 to 46 tokens with EOS
}
COMMON = {
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 16,
    "steps_per_generation": 4,  # 4 optimizer updates per rollout of 64 completions (8 prompts x 8)
    "num_generations": 8,
    "temperature": 1.0,
    "beta": 0.0,
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}
OVERLONG_BUFFER = 8  # soft punishment over the last 8 tokens before the limit (the paper: 4k of 20k)
# Each row adds one part to the row before it (the paper's order); `trainer` is "trl" (GRPOTrainer) or "dapo".
GRPO_LOSS = {"loss_type": "grpo", "epsilon": 0.2, "epsilon_high": 0.2}
CONFIGS = [
    ("grpo", "GRPO (TRL GRPOTrainer)", "trl", {**GRPO_LOSS, "mask_truncated_completions": False}),
    ("overlong_filter", "+ overlong filtering", "dapo", {**GRPO_LOSS, "dynamic_sampling": False}),
    ("clip_higher", "+ clip-higher (0.28)", "dapo", {"loss_type": "grpo", "dynamic_sampling": False}),
    ("soft_overlong", "+ soft overlong punishment", "dapo", {"loss_type": "grpo", "dynamic_sampling": False}),
    ("token_mean", "+ token-level loss", "dapo", {"dynamic_sampling": False}),
    ("dapo", "+ dynamic sampling (DAPO)", "dapo", {}),
    ("dapo_fixed", "DAPO, fixed rounds (verl)", "dapo", {"dynamic_sampling_round_size": "fixed"}),
]
NAMES = [name for name, *_ in CONFIGS]
SOFT_OVERLONG_FROM = "soft_overlong"  # this row and every row after it use the soft overlong buffer
# Gains in held-out mean@8 over each seed's warm start, for "steps / tokens to target".
TARGETS = [0.1, 0.15, 0.2]
FULL = {"seeds": [0, 1, 2, 3, 4], "steps": 300, "eval_every": 50, "jobs": 2, "targets": TARGETS}
QUICK = {**FULL, "seeds": [0, 1], "steps": 4, "eval_every": 2, "sft_steps": 20, "n_test": 8}
IGNORED_FIELDS = {"output_dir", "logging_dir", "run_name"}


def config_kwargs(name: str, seed: int, steps: int, output_dir: str) -> tuple[str, dict]:
    """The trainer kind and the config fields of one row."""
    index = NAMES.index(name)
    _, _, trainer, changes = CONFIGS[index]
    kwargs = {**COMMON, **changes, "seed": seed, "max_steps": steps, "output_dir": output_dir}
    kwargs["max_completion_length"] = TASK["max_completion_length"]
    if trainer == "dapo" and index >= NAMES.index(SOFT_OVERLONG_FROM):
        kwargs["overlong_buffer_length"] = OVERLONG_BUFFER
    return trainer, kwargs


def task_splits(seed: int, n_test: int):
    from dapo_trl.data import arithmetic_splits

    return arithmetic_splits(
        TASK["n_train"], n_test, seed=seed, num_terms=TASK["num_terms"], max_value=TASK["max_value"]
    )


# ------------------------------------------------------------------------------------------------ workers


def warm_start(seed: int, out_dir: str, sft_steps: int, n_test: int) -> None:
    """Build, warm-start and save the seed's model; measure the task's properties on it (written next to it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dapo_trl.data import supervised_warm_start
    from dapo_trl.testing import save_tiny_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    width = TASK["hidden_size"]
    model_dir = save_tiny_model(
        out_dir, hidden_size=width, intermediate_size=2 * width, max_position_embeddings=96, seed=seed
    )
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    splits = task_splits(seed, n_test)
    stats = supervised_warm_start(
        model,
        tokenizer,
        splits["train"],
        steps=sft_steps,
        learning_rate=TASK["sft_learning_rate"],
        seed=seed,
        early_answer_rate=TASK["early_answer_rate"],
        progress=False,
    )
    model.save_pretrained(out_dir)
    properties = ablation_report.task_properties(model, tokenizer, splits, TASK["max_completion_length"], seed)
    Path(out_dir, "properties.json").write_text(json.dumps({**properties, "sft": stats}))


class Probe:
    """The accuracy reward, counting what every config generates: tokens, truncation, zero-variance groups."""

    def __init__(self, group: int, limit: int, eos_id: int):
        self.group, self.limit, self.eos_id = group, limit, eos_id
        self.totals = dict.fromkeys(("completions", "tokens", "truncated", "groups", "zero_variance", "max_len"), 0)

    def reward(self):
        from dapo_trl.rewards import gsm8k_accuracy

        def gsm8k_accuracy_probed(completions, completion_ids, answer, **kwargs):
            rewards = gsm8k_accuracy(completions, answer)
            totals = self.totals
            totals["completions"] += len(rewards)
            totals["tokens"] += sum(len(ids) for ids in completion_ids)
            totals["truncated"] += sum(len(ids) >= self.limit and ids[-1] != self.eos_id for ids in completion_ids)
            totals["max_len"] = max([totals["max_len"], *map(len, completion_ids)])
            for start in range(0, len(rewards), self.group):
                totals["groups"] += 1
                totals["zero_variance"] += len(set(rewards[start : start + self.group])) == 1
            return rewards

        gsm8k_accuracy_probed.__name__ = "gsm8k_accuracy"
        return gsm8k_accuracy_probed


def train_run(name: str, seed: int, warm_dir: str, steps: int, eval_every: int, n_test: int, out: str) -> None:
    """One config, one seed: train from the warm start and write its curves to `out` (JSON)."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dapo_trl import DAPOConfig, DAPOTrainer
    from dapo_trl.evaluation import MathEvalCallback
    from dapo_trl.rewards import gsm8k_accuracy

    torch.set_num_threads(1)
    trainer_kind, kwargs = config_kwargs(name, seed, steps, tempfile.mkdtemp())
    config_class, trainer_class = (GRPOConfig, GRPOTrainer) if trainer_kind == "trl" else (DAPOConfig, DAPOTrainer)
    tokenizer = AutoTokenizer.from_pretrained(warm_dir)
    splits = task_splits(seed, n_test)
    probe = Probe(COMMON["num_generations"], TASK["max_completion_length"], tokenizer.eos_token_id)
    per_step: list[dict] = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            per_step.append({"step": state.global_step, **probe.totals})

    evaluation = MathEvalCallback(
        splits["test"], tokenizer, eval_every=eval_every, k=8, max_new_tokens=TASK["max_completion_length"],
        temperature=1.0, top_p=1.0, batch_size=256, seed=seed, reward=gsm8k_accuracy,
    )  # fmt: skip
    trainer = trainer_class(
        model=warm_dir,
        reward_funcs=probe.reward(),
        args=config_class(**kwargs),
        train_dataset=splits["train"],
        processing_class=tokenizer,
        callbacks=[Record(), evaluation],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logged = {
        key: [entry.get(key) for entry in trainer.state.log_history if "loss" in entry]
        for key in ("entropy", "clip_ratio/low_mean", "clip_ratio/high_mean")
    }
    evals = [{"step": 0 if tag == "before" else steps if tag == "after" else int(tag[4:]), **m}
             for tag, m in evaluation.results.items()]  # fmt: skip
    Path(out).write_text(json.dumps({"name": name, "seed": seed, "seconds": seconds, "steps": per_step,
                                     "evals": evals, "logged": logged}))  # fmt: skip


# ------------------------------------------------------------------------------------------------ driver


def _log_path(log_dir: str, args: list[str]) -> str:
    kind, *rest = args[1:]  # warm SEED ... / train CONFIG SEED ...
    return os.path.join(log_dir, "_".join([kind, *rest[: 1 if kind == "warm" else 2]]) + ".log")


def run_jobs(jobs: list[list[str]], parallel: int, log_dir: str) -> None:
    """Run worker commands, `parallel` at a time (each a fresh single-threaded process); stop at the first failure."""
    pending, running = list(jobs), []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    while pending or running:
        while pending and len(running) < parallel:
            args = pending.pop(0)
            log = open(_log_path(log_dir, args), "w")
            running.append(
                (subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=log, stderr=log), args)
            )
        time.sleep(1)
        for process, args in list(running):
            if process.poll() is None:
                continue
            running.remove((process, args))
            if process.returncode:
                tail = Path(_log_path(log_dir, args)).read_text()[-3000:]
                raise SystemExit(f"worker {' '.join(args)} failed ({process.returncode}):\n{tail}")
            print(f"done: {Path(_log_path(log_dir, args)).stem}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, a few steps, report in a temp dir")
    parser.add_argument("--out", type=Path, help="report path (default benchmarks/ABLATION.md; --quick: temp dir)")
    parser.add_argument("--render", type=Path, help="only re-render the report (and plot) from a results JSON")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2 3 4)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run")
    parser.add_argument("--jobs", type=int, help="runs in parallel (one core each)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.render:
        ablation_report.write_report(reporting.read_results(args.render), args.out or args.render.with_suffix(".md"))
        return 0
    plan = {**FULL, **(QUICK if args.quick else {})}
    plan.update({k: v for k, v in (("seeds", args.seeds), ("steps", args.steps), ("jobs", args.jobs)) if v})
    workdir = tempfile.mkdtemp(prefix="ablation_")
    out = args.out or (Path(workdir) / "ABLATION.md" if args.quick else HERE / "ABLATION.md")
    data = run_all(plan, workdir, args.quick, argv)
    ablation_report.write_report(data, out)
    print(f"wrote {out} and {out.with_suffix('.json').name} ({data['wall_seconds'] / 60:.1f} min)")
    return 0


def run_all(plan: dict, workdir: str, quick: bool, argv) -> dict:
    start, meta = time.time(), reporting.machine_meta()  # the load average and commit when the run starts
    sft_steps, n_test = plan.get("sft_steps", TASK["sft_steps"]), plan.get("n_test", TASK["n_test"])
    warm = {seed: os.path.join(workdir, f"warm{seed}") for seed in plan["seeds"]}
    run_jobs([["--worker", "warm", str(s), warm[s], str(sft_steps), str(n_test)] for s in plan["seeds"]],
             plan["jobs"], workdir)  # fmt: skip
    runs = [(name, seed) for seed in plan["seeds"] for name, *_ in CONFIGS]
    outputs = {run: os.path.join(workdir, f"{run[0]}_{run[1]}.json") for run in runs}
    worker_args = [str(plan["steps"]), str(plan["eval_every"]), str(n_test)]
    run_jobs([["--worker", "train", name, str(seed), warm[seed], *worker_args, outputs[name, seed]]
              for name, seed in runs], plan["jobs"], workdir)  # fmt: skip
    return {
        "meta": meta,
        "command": reporting.command_line(__file__, argv),
        "wall_seconds": time.time() - start,
        "plan": {**plan, "sft_steps": sft_steps, "n_test": n_test},
        "task": TASK,
        "common": COMMON,
        "configs": config_table(plan["steps"]),
        "properties": {seed: json.loads(Path(warm[seed], "properties.json").read_text()) for seed in plan["seeds"]},
        "runs": [json.loads(Path(path).read_text()) for path in outputs.values()],
    }


def config_table(steps: int) -> list[dict]:
    """Every row's label and trainer, and the config fields it changes from the row before (checked on the real
    config objects: each row adds exactly its part)."""
    from trl import GRPOConfig

    from dapo_trl import DAPOConfig
    from dapo_trl.quiet import known_warnings_quiet

    rows, previous = [], None
    for name, label, trainer, _ in CONFIGS:
        kind, kwargs = config_kwargs(name, 0, steps, "out")
        with known_warnings_quiet():
            fields = (GRPOConfig if kind == "trl" else DAPOConfig)(**kwargs).to_dict()
        # Fields of both configs only: DAPOConfig's own fields (dynamic sampling, overlong buffer, ...) are listed
        # from the row that changes them, not when GRPOConfig (which lacks them) gives way to DAPOConfig.
        changed = {} if previous is None else {
            key: [previous[key], fields[key]]
            for key in sorted(set(fields) & set(previous))
            if key not in IGNORED_FIELDS and previous[key] != fields[key]
        }  # fmt: skip
        rows.append({"name": name, "label": label, "trainer": trainer, "changed": changed})
        previous = fields
    return rows


def worker(args: list[str]) -> int:
    kind, *rest = args
    if kind == "warm":
        seed, out_dir, sft_steps, n_test = rest
        warm_start(int(seed), out_dir, int(sft_steps), int(n_test))
    else:
        name, seed, warm_dir, steps, eval_every, n_test, out = rest
        train_run(name, int(seed), warm_dir, int(steps), int(eval_every), int(n_test), out)
    sys.stdout.flush()
    os._exit(0)  # skip native teardown (see tests/helpers.run_and_shut_down)


if __name__ == "__main__":
    sys.exit(main())
