"""Cost of DAPO dynamic sampling: round policies, GRESO-style pre-rollout skipping, and kept-only old log-probs.

Runs the real `DAPOTrainer` on the tiny offline model (`dapo_trl.testing.save_tiny_model`) with a synthetic reward
whose keep rate is controlled: every prompt of the dataset carries a fixed, seeded label. A share `p` of the prompts
is "informative" (the reward alternates 0/1 over the completions of the group, so the group always has both values
and is always kept); the others get a constant reward (1.0 for half of them, 0.0 for the other half), so their groups
are always dropped, half as "all max" and half as "all min". The keep rate of a group is therefore exactly the chance
that its prompt is informative, whatever the model generates, and a prompt never changes status: the favourable
case for skipping prompts whose last group was zero-variance.

Policies compared (all with `dynamic_sampling_source="new_prompts"` and no round cap):

- `fixed`: verl's policy, every extra round is one whole generation batch of new prompts, surplus kept groups dropped;
- `adaptive`: rounds sized from the running keep-rate estimate, first round oversampled (up to 2 generation batches);
- `adaptive-1x`: `adaptive` with `dynamic_sampling_max_oversample=1.0` (no round larger than one generation batch);
- `adaptive+skip`: `adaptive` with `dynamic_sampling_skip_zero_variance=True` (GRESO, explore 0.25).

The dataset is small (256 prompts) so that a run covers several epochs and skipped prompts come back. Every run uses
`steps_per_generation=2` and `gradient_accumulation_steps=1`, so old log-probs are needed (a generation batch serves
two optimizer steps); the rows actually scored by the no-grad old-log-prob forward are counted and compared with what
a TRL-style implementation would score (every generated row).

For each (keep rate, policy) the `dynamic_sampling/*` metrics are read back from `trainer.state.log_history` and
checked against independent counts made by the benchmark: inside the reward function (one call per generation
round), on the dataloader's prompts, on the prompt stream's draws, and on the log-prob forwards.

Usage:

    python benchmarks/dynamic_sampling.py                 # full run, writes benchmarks/DYNAMIC_SAMPLING.md
    python benchmarks/dynamic_sampling.py --quick         # CI smoke: 4 steps, writes to a temporary file
    python benchmarks/dynamic_sampling.py --steps 40 --out /tmp/ds.md
    python benchmarks/dynamic_sampling.py --render /tmp/ds.json   # only re-render a report from its results

The raw results go to the JSON next to the report (benchmarks/DYNAMIC_SAMPLING.json); see benchmarks/reporting.py.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from dapo_trl import DAPOConfig, DAPOTrainer  # noqa: E402
from dapo_trl import sampling as ds_sampling  # noqa: E402
from dapo_trl.sampling import RoundPlanner  # noqa: E402
from dapo_trl.testing import save_tiny_model  # noqa: E402


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reporting  # noqa: E402
from reporting import safe_div  # noqa: E402


INFORMATIVE, CONST_ONE, CONST_ZERO = 2, 1, 0
KEEP_RATES = (0.3, 0.5, 0.8)
# name -> (dynamic_sampling_round_size, dynamic_sampling_max_oversample, dynamic_sampling_skip_zero_variance)
POLICIES = {
    "fixed": ("fixed", 2.0, False),
    "adaptive": ("adaptive", 2.0, False),
    "adaptive-1x": ("adaptive", 1.0, False),
    "adaptive+skip": ("adaptive", 2.0, True),
}
DEFAULT_OUT = os.path.join("benchmarks", "DYNAMIC_SAMPLING.md")


# ---------------------------------------------------------------------------------------------------- data & reward


def build_dataset(size: int, keep_rate: float, seed: int) -> Dataset:
    """
    `size` distinct prompts "a+b=", exactly `round(keep_rate * size)` of them informative, in a seeded random order.

    Prompts are distinct because the skip history is keyed by the prompt text: two rows with the same text and
    different labels would make the history (rightly) mix them up, which is not what is measured here.
    """
    rng = random.Random(seed)
    n_info = round(keep_rate * size)
    n_rest = size - n_info
    labels = [INFORMATIVE] * n_info + [CONST_ONE] * (n_rest // 2) + [CONST_ZERO] * (n_rest - n_rest // 2)
    rng.shuffle(labels)
    width = max(100, math.ceil(math.sqrt(2 * size)))
    prompts = [f"{k // width}+{k % width}=" for k in rng.sample(range(width * width), size)]
    return Dataset.from_dict({"prompt": prompts, "ds_label": labels, "ds_index": list(range(size))})


@dataclass
class Probe:
    """What the benchmark saw, independently of the trainer's metrics, keyed by `global_step` at generation time."""

    calls: dict[int, list[dict]] = field(default_factory=lambda: defaultdict(list))  # reward calls (= rounds)
    loader: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # dataloader prompts
    stream: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # prompt-stream draws
    old_rows: Counter = field(default_factory=Counter)  # rows passed to DAPOTrainer._old_logps
    nograd_rows: Counter = field(default_factory=Counter)  # rows of no-grad log-prob forwards actually computed
    violations: list[str] = field(default_factory=list)
    step: int = -1  # global_step of the generation batch being built


def make_reward(num_generations: int, probe: Probe):
    def controlled_reward(prompts, completions, ds_label, ds_index, trainer_state=None, **kwargs):
        g = num_generations
        if len(completions) % g:
            probe.violations.append(f"reward called with {len(completions)} rows, not a multiple of {g}")
        counts = {INFORMATIVE: 0, CONST_ONE: 0, CONST_ZERO: 0}
        out = []
        for i, label in enumerate(ds_label):
            start = i - i % g
            if i % g == 0:
                counts[label] += 1
            elif ds_label[start] != label or prompts[start] != prompts[i]:
                # TRL passes rows group-contiguous; if not, the "position in group" below is meaningless.
                probe.violations.append(f"row {i}: group starting at row {start} is not contiguous")
            # Informative: 0, 1, 0, 1, ... over the positions of the group, so both values are always present.
            out.append(float((i % g) % 2) if label == INFORMATIVE else float(label == CONST_ONE))
        step = trainer_state.global_step if trainer_state is not None else -1
        probe.calls[step].append(
            {
                "groups": len(completions) // g,
                "informative": counts[INFORMATIVE],
                "one": counts[CONST_ONE],
                "zero": counts[CONST_ZERO],
                "indices": list(ds_index[::g]),
            }
        )
        return out

    return controlled_reward


class ProbedTrainer(DAPOTrainer):
    """`DAPOTrainer` that records the dataloader's prompts and the rows of the kept-only old-log-prob forward."""

    probe: Probe

    def _dynamic_sampling(self, inputs):
        step = self.state.global_step
        self.probe.step = step
        self.probe.loader[step].extend(row["ds_index"] for row in list(inputs)[:: self.num_generations])
        return super()._dynamic_sampling(inputs)

    def _old_logps(self, batch):
        self.probe.old_rows[self.state.global_step] += batch["prompt_ids"].size(0)
        return super()._old_logps(batch)


@contextlib.contextmanager
def instrument(probe: Probe):
    """Count prompt-stream draws and the rows of every no-grad log-prob forward that TRL's method really computes."""
    take, logps = ds_sampling.PromptStream.take, GRPOTrainer._get_per_token_logps_and_entropies

    def counting_take(self, n):
        out = take(self, n)
        probe.stream[probe.step].extend(out)
        return out

    def counting_logps(self, model, input_ids, *args, **kwargs):
        if not torch.is_grad_enabled():  # the training forward runs with grad; old (and ref) log-probs without
            probe.nograd_rows[self.state.global_step] += input_ids.size(0)
        return logps(self, model, input_ids, *args, **kwargs)

    ds_sampling.PromptStream.take = counting_take
    GRPOTrainer._get_per_token_logps_and_entropies = counting_logps
    try:
        yield
    finally:
        ds_sampling.PromptStream.take = take
        GRPOTrainer._get_per_token_logps_and_entropies = logps


# ---------------------------------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    keep_rate: float
    policy: str
    target: int
    dataset_size: int
    num_steps: int
    gens: list[dict]  # per generation batch: the dynamic_sampling/* metrics and the benchmark's own counts
    wall: float
    issues: list[str]
    old_rows_total: int = 0
    nograd_rows_total: int = 0


KEYS = (
    "rounds",
    "groups_generated",
    "groups_kept",
    "groups_surplus",
    "groups_filler",
    "cap_hit",
    "keep_rate",
    "prompts_consumed",
    "prompts_consumed_total",
    "prompts_skipped",
    "prompts_repeated",
    "dropped_all_max_frac",
    "dropped_all_min_frac",
)


def _num(entry: dict, key: str) -> float:
    value = entry.get(f"dynamic_sampling/{key}")
    return math.nan if value is None else float(value)


def run_one(
    model_dir: str, dataset: Dataset, keep_rate: float, policy: str, cli: argparse.Namespace, work: str
) -> RunResult:
    round_size, max_oversample, skip = POLICIES[policy]
    probe = Probe()
    args = DAPOConfig(
        output_dir=os.path.join(work, f"out-{policy}-{keep_rate}"),
        per_device_train_batch_size=cli.batch_size,
        steps_per_generation=cli.steps_per_generation,
        gradient_accumulation_steps=cli.grad_accum,
        num_generations=cli.num_generations,
        max_completion_length=cli.max_completion_length,
        # Truncated rows stay in the loss, so every informative group carries gradient and the share p of prompts
        # that can be kept is the one this benchmark controls (the random model rarely stops before the limit).
        mask_truncated_completions=False,
        max_steps=cli.steps,
        learning_rate=1e-6,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=cli.seed,
        dynamic_sampling=True,
        dynamic_sampling_source="new_prompts",
        dynamic_sampling_round_size=round_size,
        dynamic_sampling_max_oversample=max_oversample,
        dynamic_sampling_skip_zero_variance=skip,
        dynamic_sampling_skip_explore=cli.skip_explore,
        max_num_gen_batches=cli.max_num_gen_batches,
    )
    trainer = ProbedTrainer(
        model=model_dir,
        reward_funcs=make_reward(cli.num_generations, probe),
        args=args,
        train_dataset=dataset,
    )
    trainer.probe = probe
    trainer.remove_callback(transformers.PrinterCallback)  # disable_tqdm=True would print every log dict
    target = args.generation_batch_size // cli.num_generations
    with instrument(probe):
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start

    labels = list(dataset["ds_label"])
    entries = [e for e in trainer.state.log_history if "dynamic_sampling/rounds" in e]
    issues = list(dict.fromkeys(probe.violations))[:5]
    expected = -(-cli.steps // cli.steps_per_generation)
    if len(entries) != expected:
        issues.append(
            f"{len(entries)} log entries with dynamic_sampling metrics for {cli.steps} steps "
            f"(expected one per generation batch: {expected})"
        )
    gens, total, seen = [], 0.0, set()
    for entry in entries:
        s = {key: _num(entry, key) for key in KEYS}
        s["step"] = int(entry["step"])
        key = s["step"] - 1  # the reward function sees global_step before the optimizer step is counted
        calls = probe.calls.get(key, [])
        generated = [i for c in calls for i in c["indices"]]
        drawn = probe.loader.get(key, []) + probe.stream.get(key, [])
        s["repeated_rows"] = len(generated) - len(set(generated))  # a dataset row generated twice in one batch
        s["trl_frac_reward_zero_std"] = float(entry.get("frac_reward_zero_std", math.nan))
        s["old_rows"] = probe.old_rows.get(key, 0)
        s["nograd_rows"] = probe.nograd_rows.get(key, 0)
        tag = f"step {s['step']}"
        issues += check_step(s, target, calls, policy, total, cli.num_generations)
        issues += check_skips(s, tag, probe.loader.get(key, []), drawn, calls, labels, seen, policy)
        s.update(skip_stats(drawn, generated, labels, seen))
        seen |= set(generated)
        gens.append(s)
        total = s["prompts_consumed_total"]
    generating = {s["step"] - 1 for s in gens}
    stray = {k: v for k, v in (probe.old_rows + probe.nograd_rows).items() if k not in generating and v}
    if stray:
        issues.append(f"old-log-prob rows computed at steps without a generation batch: {dict(stray)}")
    return RunResult(
        keep_rate,
        policy,
        target,
        len(dataset),
        cli.steps,
        gens,
        wall,
        issues,
        sum(probe.old_rows.values()),
        sum(probe.nograd_rows.values()),
    )


def check_step(s: dict, target: int, calls: list[dict], policy: str, prev_total: float, g: int) -> list[str]:
    """Consistency of one generation batch's metrics, with each other and with what the reward function saw."""
    out = []
    tag = f"step {s['step']}"
    gen, kept, surplus, filler = s["groups_generated"], s["groups_kept"], s["groups_surplus"], s["groups_filler"]
    skipped = s["prompts_skipped"]

    def expect(ok: bool, what: str) -> None:
        if not ok:
            out.append(f"{tag}: {what}")

    expect(kept + filler == target, f"groups_kept {kept} + groups_filler {filler} != target {target}")
    expect(
        s["prompts_consumed"] == gen + skipped,
        f"prompts_consumed {s['prompts_consumed']} != groups_generated {gen} + prompts_skipped {skipped}",
    )
    if not POLICIES[policy][2]:
        expect(skipped == 0, f"prompts_skipped {skipped} without skipping")
    expect(
        s["prompts_consumed_total"] == prev_total + s["prompts_consumed"],
        f"prompts_consumed_total {s['prompts_consumed_total']} != previous {prev_total} + {s['prompts_consumed']}",
    )
    all_kept = round(s["keep_rate"] * gen)
    expect(
        filler > 0 or all_kept == kept + surplus,
        f"keep_rate * generated = {all_kept} != groups_kept {kept} + groups_surplus {surplus}",
    )
    dropped_frac = s["dropped_all_max_frac"] + s["dropped_all_min_frac"]
    expect(
        math.isclose(dropped_frac, 1 - s["keep_rate"], abs_tol=1e-6),
        f"dropped_all_max_frac + dropped_all_min_frac = {dropped_frac:.4f} != 1 - keep_rate {1 - s['keep_rate']:.4f}",
    )
    expect(s["cap_hit"] == 0, "cap_hit")
    if policy == "fixed":
        expect(gen == target * s["rounds"], f"fixed policy: {gen} groups in {s['rounds']:.0f} rounds of {target}")
    # Old log-probs: computed once, for the rows of the trained batch only, and nothing else ran without grad.
    expect(
        s["old_rows"] == (kept + filler) * g,
        f"_old_logps scored {s['old_rows']} rows for a trained batch of {(kept + filler) * g:.0f}",
    )
    expect(
        s["nograd_rows"] == s["old_rows"],
        f"no-grad log-prob forwards computed {s['nograd_rows']} rows, _old_logps asked for {s['old_rows']}",
    )
    # Independent count from inside the reward function (one call per round on a single process).
    if not calls:
        out.append(f"{tag}: the reward function saw no call for this step")
        return out
    expect(len(calls) == s["rounds"], f"rounds {s['rounds']:.0f} != reward calls {len(calls)}")
    seen = sum(c["groups"] for c in calls)
    expect(seen == gen, f"groups_generated {gen:.0f} != groups scored by the reward {seen}")
    info = sum(c["informative"] for c in calls)
    expect(info == kept + surplus, f"kept + surplus {kept + surplus:.0f} != informative groups scored {info}")
    ones, zeros = sum(c["one"] for c in calls), sum(c["zero"] for c in calls)
    expect(
        round(s["dropped_all_max_frac"] * gen) == ones,
        f"dropped_all_max_frac * generated = {s['dropped_all_max_frac'] * gen:.1f} != all-1.0 groups {ones}",
    )
    expect(
        round(s["dropped_all_min_frac"] * gen) == zeros,
        f"dropped_all_min_frac * generated = {s['dropped_all_min_frac'] * gen:.1f} != all-0.0 groups {zeros}",
    )
    # Last round must be the one that completed the batch (no round after the target was reached).
    if len(calls) > 1:
        before_last = sum(c["informative"] for c in calls[:-1])
        expect(before_last < target, f"a round ran although {before_last} >= {target} groups were already kept")
    return out


def check_skips(
    s: dict, tag: str, loader: list[int], drawn: list[int], calls: list[dict], labels: list[int], seen: set, policy
) -> list[str]:
    """
    Prompts drawn (dataloader + prompt stream, counted by the benchmark) against prompts generated (reward calls):
    the difference is what was skipped, and only prompts known to be zero-variance may be skipped.
    """
    out = []
    generated = Counter(i for c in calls for i in c["indices"])
    # Stream draws of a prompt already in the batch (the dataloader's, or drawn and generated) are passed over.
    in_batch, repeated = set(loader), Counter()
    for i in drawn[len(loader) :]:
        if i in in_batch:
            repeated[i] += 1
        elif generated[i]:
            in_batch.add(i)
    skipped = Counter(drawn) - generated - repeated
    extra = generated - Counter(drawn)
    if sum(repeated.values()) != s["prompts_repeated"]:
        out.append(f"{tag}: prompts_repeated {s['prompts_repeated']:.0f} != repeated draws {sum(repeated.values())}")
    if len(drawn) != s["prompts_consumed"] + s["prompts_repeated"]:
        out.append(
            f"{tag}: prompts_consumed {s['prompts_consumed']:.0f} + repeated {s['prompts_repeated']:.0f} "
            f"!= prompts drawn {len(drawn)}"
        )
    if extra:
        out.append(f"{tag}: generated prompts that were never drawn: {sorted(extra)[:5]}")
    if sum(skipped.values()) != s["prompts_skipped"]:
        out.append(f"{tag}: prompts_skipped {s['prompts_skipped']:.0f} != drawn - generated = {sum(skipped.values())}")
    if skipped and not POLICIES[policy][2]:
        out.append(f"{tag}: {sum(skipped.values())} prompts drawn and not generated without skipping")
    bad = [i for i in skipped if labels[i] == INFORMATIVE]
    if bad:
        out.append(f"{tag}: informative prompts skipped: {bad[:5]}")
    unknown = [i for i in skipped if i not in seen and i not in generated]
    if unknown:
        out.append(f"{tag}: prompts skipped before ever being generated: {unknown[:5]}")
    # The dataloader's prompts are filtered before the first round: a skipped one must come from an earlier batch.
    first = Counter(calls[0]["indices"]) if calls else Counter()
    early = [i for i in Counter(loader) - first if i not in seen]
    if early:
        out.append(f"{tag}: dataloader prompts missing from round 1 that were never generated before: {early[:5]}")
    return out


def skip_stats(drawn: list[int], generated: list[int], labels: list[int], seen: set) -> dict:
    """Draws of constant prompts already generated in an earlier batch, and how many of them were generated again."""
    gen = Counter(generated)
    eligible = Counter(i for i in drawn if labels[i] != INFORMATIVE and i in seen)
    regenerated = sum(min(n, gen[i]) for i, n in eligible.items())
    return {"known_const_drawn": sum(eligible.values()), "known_const_generated": regenerated}


# ---------------------------------------------------------------------------------------------------- summary


def summarize(r: RunResult, g: int) -> dict:
    gens = r.gens
    rounds = [s["rounds"] for s in gens]
    generated = sum(s["groups_generated"] for s in gens)
    kept = sum(s["groups_kept"] for s in gens)
    trained = sum(s["groups_kept"] + s["groups_filler"] for s in gens)
    surplus = sum(s["groups_surplus"] for s in gens)
    consumed = sum(s["prompts_consumed"] for s in gens)
    skipped = sum(s["prompts_skipped"] for s in gens)
    half = gens[len(gens) // 2 :]
    n = len(gens) or 1
    all_kept = sum(round(s["keep_rate"] * s["groups_generated"]) for s in gens)
    consumed_total = gens[-1]["prompts_consumed_total"] if gens else math.nan
    known = sum(s["known_const_drawn"] for s in gens)
    return {
        "keep_rate": r.keep_rate,
        "policy": r.policy,
        "steps": r.num_steps,
        "gens": len(gens),
        "rounds_mean": statistics.fmean(rounds) if rounds else math.nan,
        "rounds_le2": sum(x <= 2 for x in rounds) / n,
        "rounds_1": sum(x == 1 for x in rounds) / n,
        "rounds_max": max(rounds) if rounds else math.nan,
        "rounds_mean_2nd": statistics.fmean(s["rounds"] for s in half) if half else math.nan,
        "groups_per_gen": generated / n,
        "groups_per_round": safe_div(generated, sum(rounds)),
        "gen_per_trained": safe_div(generated, kept),
        "gen_per_trained_2nd": safe_div(sum(s["groups_generated"] for s in half), sum(s["groups_kept"] for s in half)),
        "drawn_per_trained": safe_div(consumed, kept),
        "ideal": 1 / r.keep_rate,
        "surplus_per_gen": surplus / n,
        "observed_keep": safe_div(all_kept, generated),
        "filler": sum(s["groups_filler"] for s in gens),
        "skipped_per_gen": skipped / n,
        "skipped_share": safe_div(skipped, consumed),
        "consumed_total": consumed_total,
        "epochs": consumed_total / r.dataset_size,
        "known_const_drawn": known,
        "explore_observed": safe_div(sum(s["known_const_generated"] for s in gens), known),
        "old_rows": r.old_rows_total,
        "nograd_rows": r.nograd_rows_total,
        "trained_rows": trained * g,
        "trl_rows": generated * g,
        "old_ratio": safe_div(r.old_rows_total, generated * g),
        # Generation batches where TRL's frac_reward_zero_std (mean over rounds) differs from the dropped share.
        "trl_zero_std_off": sum(
            not math.isclose(s["trl_frac_reward_zero_std"], 1 - s["keep_rate"], abs_tol=1e-3)
            for s in gens
            if s["rounds"] > 1
        ),
        "multi_round_gens": sum(s["rounds"] > 1 for s in gens),
        "repeated_rows": sum(s["repeated_rows"] for s in gens),
        "gens_with_repeats": sum(s["repeated_rows"] > 0 for s in gens),
        "wall": r.wall,
        "ms_per_step": 1000 * r.wall / (r.num_steps or 1),
    }


def table_latency(rows: list[dict]) -> str:
    headers = ["keep rate p", "policy", "gen. batches", "rounds/gen. batch", "1 round", "<= 2 rounds", "max rounds"]
    headers += ["groups/round", "groups generated/gen. batch", "generated per trained (1/p)"]
    headers += ["surplus groups/gen. batch", "observed keep rate", "wall s", "ms/opt. step"]
    cells = [
        [f"{x['keep_rate']:.0%}", x["policy"], x["gens"], f"{x['rounds_mean']:.2f}", f"{x['rounds_1']:.0%}"]
        + [f"{x['rounds_le2']:.0%}", f"{x['rounds_max']:.0f}", f"{x['groups_per_round']:.1f}"]
        + [f"{x['groups_per_gen']:.1f}", f"{x['gen_per_trained']:.2f} ({x['ideal']:.2f})"]
        + [f"{x['surplus_per_gen']:.2f}", f"{x['observed_keep']:.2f}", f"{x['wall']:.1f}", f"{x['ms_per_step']:.0f}"]
        for x in rows
    ]
    return reporting.md_table(headers, cells)


def table_skip(rows: list[dict]) -> str:
    headers = ["keep rate p", "policy", "prompts drawn (dataset passes)", "skipped/gen. batch"]
    headers += ["skipped share of drawn", "drawn per trained", "generated per trained: all / 2nd half"]
    headers += ["rounds/gen. batch, 2nd half", "re-generated share of known-constant draws"]
    cells = []
    for x in rows:
        explore = f"{x['explore_observed']:.2f} of {x['known_const_drawn']}" if x["known_const_drawn"] else "-"
        cells.append(
            [f"{x['keep_rate']:.0%}", x["policy"], f"{x['consumed_total']:.0f} ({x['epochs']:.1f})"]
            + [f"{x['skipped_per_gen']:.2f}", f"{x['skipped_share']:.0%}", f"{x['drawn_per_trained']:.2f}"]
            + [f"{x['gen_per_trained']:.2f} / {x['gen_per_trained_2nd']:.2f}", f"{x['rounds_mean_2nd']:.2f}", explore]
        )
    return reporting.md_table(headers, cells)


def table_old_logps(rows: list[dict]) -> str:
    headers = ["keep rate p", "policy", "rows trained", "old-log-prob rows scored (DAPOTrainer)"]
    headers += ["no-grad forward rows (counted in TRL's method)", "TRL-style rows (every generated row)"]
    headers += ["ratio scored / TRL-style", "saved"]
    cells = [
        [f"{x['keep_rate']:.0%}", x["policy"], f"{x['trained_rows']:.0f}", x["old_rows"], x["nograd_rows"]]
        + [f"{x['trl_rows']:.0f}", f"{x['old_ratio']:.2f}", f"{1 - x['old_ratio']:.0%}"]
        for x in rows
    ]
    return reporting.md_table(headers, cells)


def _cmp(a: float, b: float) -> str:
    diff = a / b - 1
    return "about as many" if abs(diff) < 0.05 else f"{abs(diff):.0%} {'more' if diff > 0 else 'fewer'}"


def reading(rows: list[dict], target: int, explore: float) -> list[str]:
    """Plain sentences generated from the numbers (no claim that the numbers do not support)."""
    out = []
    by = {(x["keep_rate"], x["policy"]): x for x in rows}
    rates = sorted({x["keep_rate"] for x in rows})
    for p in rates:
        f, a, a1 = by.get((p, "fixed")), by.get((p, "adaptive")), by.get((p, "adaptive-1x"))
        if not (f and a):
            continue
        parts = [
            f"**p = {p:.0%}, latency**: adaptive needs {a['rounds_mean']:.2f} rounds per generation batch vs "
            f"{f['rounds_mean']:.2f} for fixed ({a['rounds_1']:.0%} vs {f['rounds_1']:.0%} of batches in one round, "
            f"{a['rounds_le2']:.0%} vs {f['rounds_le2']:.0%} in at most two)"
        ]
        parts.append(
            f"**volume**: it generates {_cmp(a['gen_per_trained'], f['gen_per_trained'])} groups per trained group "
            f"({a['gen_per_trained']:.2f} vs {f['gen_per_trained']:.2f}; floor 1/p = {1 / p:.2f}), wasting "
            f"{a['surplus_per_gen']:.2f} vs {f['surplus_per_gen']:.2f} surplus groups per batch"
        )
        parts.append(f"wall time {a['wall']:.1f} s vs {f['wall']:.1f} s")
        if a1:
            parts.append(
                f"adaptive-1x: {a1['rounds_mean']:.2f} rounds/batch, {a1['gen_per_trained']:.2f} generated per "
                f"trained, {a1['surplus_per_gen']:.2f} surplus/batch, {a1['wall']:.1f} s"
            )
        out.append("; ".join(parts) + ".")
    pairs = [(by[(p, "fixed")], by[(p, "adaptive")]) for p in rates if (p, "fixed") in by and (p, "adaptive") in by]
    if pairs:
        cut = [1 - a["rounds_mean"] / f["rounds_mean"] for f, a in pairs]
        vol = [a["gen_per_trained"] / f["gen_per_trained"] - 1 for f, a in pairs]
        more_surplus = [f"{f['keep_rate']:.0%}" for f, a in pairs if a["surplus_per_gen"] > f["surplus_per_gen"]]
        out.append(
            f"**Round policy summary**: adaptive changes the number of sequential generation rounds by "
            f"{-max(cut):+.0%} to {-min(cut):+.0%} against fixed, while groups generated per trained group change by "
            f"{min(vol):+.0%} to {max(vol):+.0%}. "
            + (
                f"It wastes more surplus groups than fixed at p = {', '.join(more_surplus)} (first-round "
                "oversampling): its gain is latency (fewer, larger generation calls), not generation volume."
                if more_surplus
                else "It wastes no more surplus groups than fixed at any keep rate."
            )
        )
        inverted = [f"{f['keep_rate']:.0%}" for f, a in pairs if a["wall"] > f["wall"]]
        if inverted:
            out.append(
                f"Wall time does not follow the rounds at p = {', '.join(inverted)} (adaptive slower than fixed "
                "despite fewer rounds): on this shared, loaded machine (see the load average) the seconds are noise at "
                "this scale; the round and row counts are exact."
            )
        for f, a in pairs:
            p = f["keep_rate"]
            first = min(target / p * (1 + RoundPlanner.margin), 2.0 * target)  # default max_oversample=2.0
            if first * p < target:
                out.append(
                    f"At p = {p:.0%} the first adaptive round is capped at `dynamic_sampling_max_oversample` x batch "
                    f"= {2 * target} groups, which keeps {2 * target * p:.1f} groups on average for {target} needed, "
                    f"so only {a['rounds_1']:.0%} of batches finish in one round (a larger cap trades memory per "
                    "generation call for fewer rounds)."
                )
    skip = [(p, by.get((p, "adaptive")), by.get((p, "adaptive+skip"))) for p in rates]
    skip = [(p, a, s) for p, a, s in skip if a and s]
    if skip:
        sentences = []
        for p, a, s in skip:
            steady = (p + explore * (1 - p)) / p  # every constant prompt known, generated again w.p. explore
            sentences.append(
                f"p = {p:.0%}: {s['gen_per_trained']:.2f} vs {a['gen_per_trained']:.2f} groups generated per trained "
                f"group ({s['gen_per_trained'] / a['gen_per_trained'] - 1:+.0%}; second half of the run "
                f"{s['gen_per_trained_2nd']:.2f} vs {a['gen_per_trained_2nd']:.2f}, steady-state expectation without "
                f"surplus (p + {explore:g}(1 - p))/p = {steady:.2f}), {s['rounds_mean']:.2f} vs {a['rounds_mean']:.2f} "
                f"rounds per batch, {s['skipped_share']:.0%} of drawn prompts skipped over "
                f"{s['epochs']:.1f} dataset passes, known-constant prompts re-generated at rate "
                f"{s['explore_observed']:.2f} (explore = {explore:g})"
            )
        out.append(
            "**GRESO skipping (adaptive+skip vs adaptive)**: " + "; ".join(sentences) + ". Prompts are still drawn "
            "(drawn per trained stays about 1/p), but most constant ones are skipped before generation, so the "
            "saving is generation volume, and fewer rounds as a consequence of the higher keep rate of what is "
            "generated. A prompt can only be skipped once it comes back (the dataloader and the prompt stream draw in "
            "two independent orders, so some come back within the first pass), so the first pass saves little and "
            "the saving grows with the number of passes (second half of the run vs whole run above). Surplus groups "
            "per batch, with vs without skipping: "
            + ", ".join(f"p = {p:.0%}: {s['surplus_per_gen']:.2f} vs {a['surplus_per_gen']:.2f}" for p, a, s in skip)
            + (
                " (skipping does not reduce the surplus at p = "
                + ", ".join(f"{p:.0%}" for p, a, s in skip if s["surplus_per_gen"] > a["surplus_per_gen"])
                + "; plausibly because the keep rate of what is generated moves with the skip history and the "
                "planner's estimate follows it with a lag: not measured here)."
                if any(s["surplus_per_gen"] > a["surplus_per_gen"] for p, a, s in skip)
                else "."
            )
        )
        out.append(
            "This is GRESO's most favourable case: here a prompt's label is fixed for the whole run (informative or "
            "constant, whatever the model generates), so a zero-variance prompt stays zero-variance and skipping it "
            "never loses signal. Real prompts change status as the policy learns (an unsolved prompt becomes "
            "solvable, a half-solved one becomes always solved), so real savings are smaller and skipping a prompt "
            "that has become informative costs signal until it is explored again (on average 1/explore draws later)."
        )
    if rows:
        ratios = [x["old_ratio"] for x in rows]
        out.append(
            f"**Old log-probs for kept groups only**: with steps_per_generation=2 and gradient_accumulation_steps=1 "
            f"the old-log-prob forward (no grad) runs on the trained batch only: {min(ratios):.2f} to "
            f"{max(ratios):.2f} of the rows a TRL-style implementation would score (every generated row), i.e. a "
            f"{1 - max(ratios):.0%} to {1 - min(ratios):.0%} saving of that forward; the ratio is exactly "
            "1 / (generated per trained), so it is largest where the keep rate of generated groups is lowest. "
            "DAPOTrainer scores exactly the trained rows whatever the policy; skipping removes dropped groups before "
            "generation, so the TRL-style baseline shrinks and the ratio rises (e.g. "
            + ", ".join(
                f"p = {x['keep_rate']:.0%}: {x['old_ratio']:.2f}" for x in rows if x["policy"] == "adaptive+skip"
            )
            + " with skipping): the two savings overlap, they do not add up. The count comes from "
            "wrapping `DAPOTrainer._old_logps` and, independently, from counting every no-grad call of TRL's "
            "`_get_per_token_logps_and_entropies` that actually ran: the two agree in every batch (see checks)."
        )
    return out


def render(payload: dict) -> str:
    """The report, from the results JSON that `main` wrote (`reporting.write_report`)."""
    results = [RunResult(**r) for r in payload["results"]]
    cli = argparse.Namespace(**payload["cli"])
    g = cli.num_generations
    rows = [summarize(r, g) for r in results]
    target = results[0].target if results else 0
    issues = [(r, i) for r in results for i in r.issues]
    spg = cli.steps_per_generation
    lines = reporting.results_header(
        "Dynamic sampling cost: round policies, GRESO skipping, kept-only old log-probs", payload
    )
    lines += [
        "## Setup",
        "",
        f"- Model: `dapo_trl.testing.save_tiny_model` (tiny Qwen2, {payload['params']:,} parameters, char tokenizer), "
        f"CPU, fp32, {cli.threads} torch thread(s).",
        f"- `DAPOTrainer`: {cli.steps} optimizer steps per configuration, per_device_train_batch_size={cli.batch_size}, "
        f"steps_per_generation={spg}, gradient_accumulation_steps={cli.grad_accum} (one generation batch of "
        f"**{target} groups** per {spg} optimizer steps, hence {-(-cli.steps // spg)} generation batches per run, and "
        f"old log-probs are needed), num_generations={g}, max_completion_length={cli.max_completion_length}, "
        f"learning_rate=1e-6, seed={cli.seed}, dynamic_sampling_source='new_prompts', "
        f"max_num_gen_batches={cli.max_num_gen_batches} ({'no cap' if cli.max_num_gen_batches <= 0 else 'cap'}).",
        f"- Data: {cli.dataset_size} distinct prompts `a+b=`, so a run covers several passes over the dataset; a "
        "seeded share p of them is informative (reward 0,1,0,1 over the group: always kept), the rest have a "
        "constant reward, 1.0 or 0.0 half/half (always dropped). The keep rate of a fresh group is p regardless of "
        "what the model generates, and a prompt never changes status.",
        "- Policies: `fixed` = verl (every extra round is one generation batch of new prompts, surplus dropped); "
        "`adaptive` = ours (rounds sized from the keep-rate estimate, decayed size-weighted counts with decay "
        f"{RoundPlanner.decay}, first round oversampled, rounds capped at `dynamic_sampling_max_oversample=2.0` "
        "generation batches); `adaptive-1x` = adaptive with `dynamic_sampling_max_oversample=1.0` (no first-round "
        "oversampling); `adaptive+skip` = adaptive with `dynamic_sampling_skip_zero_variance=True, "
        f"dynamic_sampling_skip_explore={cli.skip_explore:g}` (GRESO: a prompt whose last group was zero-variance "
        f"is skipped before generation with probability {1 - cli.skip_explore:g} and replaced by a stream prompt).",
        "",
        "## Latency and generation volume",
        "",
        "Per configuration, from the `dynamic_sampling/*` metrics of `trainer.state.log_history` (one entry per "
        "generation batch). *Latency* = rounds per generation batch (sequential generation calls). *Volume* = "
        "*generated per trained* = total `groups_generated` / total `groups_kept`, i.e. completions generated per "
        "completion trained; its floor without skipping is 1/p. *surplus* = kept groups beyond the batch, generated "
        "and thrown away. *observed keep rate* = kept / generated (above p with skipping: constant prompts are "
        "skipped before generation). *wall* = `trainer.train()` time, optimizer steps and old log-probs included.",
        "",
        table_latency(rows),
        "",
        "## GRESO pre-rollout skipping and dataset passes",
        "",
        "*prompts drawn* = final `prompts_consumed_total` (dataloader prompts + prompt-stream draws, skipped ones "
        f"included), and in brackets the number of passes over the {cli.dataset_size}-prompt dataset it amounts to. "
        "*skipped* = `prompts_skipped`. *2nd half* = the second half of the generation batches of the run (history "
        "built up). *re-generated share of known-constant draws* = among draws of constant prompts already generated "
        "in an earlier batch, the share generated again (counted by the benchmark; should be about the explore "
        "probability with skipping, 1 without).",
        "",
        table_skip(rows),
        "",
        "## Old log-probs: kept groups only vs every generated row",
        "",
        f"With steps_per_generation={spg} > gradient_accumulation_steps={cli.grad_accum} the second optimizer step of "
        "a generation batch trains off-policy, so the trainer computes old log-probs (one no-grad forward). "
        "`DAPOTrainer` defers it until the batch is assembled and runs it on the trained rows only; a TRL-style "
        "implementation scores every generated row inside each round. *scored* = rows passed to "
        "`DAPOTrainer._old_logps` (wrapped); *no-grad forward rows* = rows of every call of TRL's "
        "`_get_per_token_logps_and_entropies` that ran without grad (counted independently, catches any forward "
        "that the deferral would miss); *TRL-style* = `groups_generated` x num_generations.",
        "",
        table_old_logps(rows),
        "",
        "## Reading",
        "",
        *[f"- {s}" for s in reading(rows, target, cli.skip_explore)],
        "",
        *[f"- {s}" for s in notes(cli, payload["wall_seconds"], payload["meta"].get("cpus"))],
        "",
        "## Metric consistency checks",
        "",
        "Every generation batch's metrics were checked against each other (kept + filler = target; prompts_consumed "
        "= groups_generated + prompts_skipped; prompts_skipped = 0 without skipping; prompts_consumed_total "
        "accumulates prompts_consumed; keep_rate x generated = kept + surplus; dropped max/min fractions add up to "
        "1 - keep_rate; fixed rounds are whole batches) and against independent counts made by the benchmark: inside "
        "the reward function (rounds = reward calls, groups scored, informative / all-1.0 / all-0.0 groups, no round "
        "after the batch was full); on the prompts drawn (dataloader prompts + `PromptStream.take` draws = "
        "prompts_consumed, drawn - generated = prompts_skipped, every generated prompt was drawn, no informative "
        "prompt skipped, no prompt skipped before it was generated once, dataloader prompts skipped only if generated "
        "in an earlier batch); on old log-probs (rows scored = rows trained, no-grad forward rows = rows scored, "
        "nothing computed at optimizer steps without a generation batch).",
        "",
    ]
    if issues:
        lines.append(f"**{len(issues)} inconsistencies found** (first 30):")
        lines.append("")
        lines += [f"- p={r.keep_rate:.0%} {r.policy}: {i}" for r, i in issues[:30]]
    else:
        lines.append("All checks passed: no inconsistency in any generation batch of any configuration.")
    off = sum(x["trl_zero_std_off"] for x in rows)
    multi = sum(x["multi_round_gens"] for x in rows)
    lines += [
        "",
        "TRL's own per-generation metrics (`reward`, `frac_reward_zero_std`, `completions/*`, ...) are appended once "
        "per generation round and averaged by `GRPOTrainer.log` over the rounds of a batch, unweighted by round size "
        "and over every generated group (dropped ones included), not over the trained batch: "
        f"`frac_reward_zero_std` differed from the batch's dropped share (1 - `dynamic_sampling/keep_rate`) in {off} "
        f"of the {multi} multi-round generation batches ("
        + ", ".join(
            f"{pol}: {sum(x['trl_zero_std_off'] for x in rows if x['policy'] == pol)}"
            f"/{sum(x['multi_round_gens'] for x in rows if x['policy'] == pol)}"
            for pol in dict.fromkeys(x["policy"] for x in rows)
        )
        + "; only policies with rounds of unequal sizes can differ), and `completions/min_length` / `max_length` "
        "become means of per-round extremes. Use the `dynamic_sampling/*` metrics for the filter.",
    ]
    repeats = {f"p={x['keep_rate']:.0%} {x['policy']}": x for x in rows if x["repeated_rows"]}
    if repeats:
        lines += [
            "",
            "Replacement prompts come from the trainer's own `PromptStream` (its own shuffled epoch order), "
            "independent of the dataloader's sampler, so a generation batch can generate the same dataset row twice "
            "(once from the dataloader, once from the stream, or in two stream epochs); with a "
            f"{cli.dataset_size}-prompt dataset this is frequent: "
            + "; ".join(
                f"{k}: {x['repeated_rows']} repeated rows in {x['gens_with_repeats']}/{x['gens']} batches"
                for k, x in repeats.items()
            )
            + ".",
        ]
    else:
        lines += ["", "No dataset row was generated twice within one generation batch."]
    lines += [
        "",
        "<details><summary>Rounds and groups generated per generation batch, per configuration</summary>",
        "",
        *[
            f"- p={r.keep_rate:.0%} {r.policy}: rounds {[int(s['rounds']) for s in r.gens]}, "
            f"groups generated {[int(s['groups_generated']) for s in r.gens]}, "
            f"skipped {[int(s['prompts_skipped']) for s in r.gens]}"
            for r in results
        ],
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per configuration (default 160)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 4 steps, output to a temporary file")
    parser.add_argument("--out", default=None, help=f"Markdown output (default {DEFAULT_OUT}), raw results next to it")
    parser.add_argument("--render", help="only re-render the report from a results JSON this script wrote (to --out)")
    parser.add_argument("--keep-rates", type=float, nargs="+", default=list(KEEP_RATES))
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--batch-size", type=int, default=16, help="per_device_train_batch_size")
    parser.add_argument("--steps-per-generation", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient_accumulation_steps")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=8)
    parser.add_argument("--max-num-gen-batches", type=int, default=0, help="round cap (<= 0: none)")
    parser.add_argument("--dataset-size", type=int, default=256)
    parser.add_argument("--skip-explore", type=float, default=0.25, help="explore probability of adaptive+skip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust to other jobs on a small shared machine)"
    )
    cli = parser.parse_args(argv)
    if cli.steps is None:
        cli.steps = 4 if cli.quick else 160
    if cli.out is None and not cli.render:
        cli.out = os.path.join(tempfile.gettempdir(), "DYNAMIC_SAMPLING.quick.md") if cli.quick else DEFAULT_OUT
    return cli


def main(argv=None) -> int:
    cli = parse_args(argv)
    if cli.render:
        print(f"wrote {reporting.render_from_json(cli.render, render, cli.out)}")
        return 0
    torch.set_num_threads(cli.threads)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    meta = reporting.machine_meta()

    results: list[RunResult] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        model_dir = save_tiny_model(os.path.join(work, "tiny"))
        params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        # Warm-up (not recorded): the first trainer of the process pays one-off costs.
        warm = argparse.Namespace(**{**vars(cli), "steps": cli.steps_per_generation})
        run_one(model_dir, build_dataset(cli.dataset_size, 0.5, cli.seed), 0.5, "fixed", warm, work)
        for p in cli.keep_rates:
            dataset = build_dataset(cli.dataset_size, p, cli.seed)
            for policy in cli.policies:
                r = run_one(model_dir, dataset, p, policy, cli, work)
                results.append(r)
                x = summarize(r, cli.num_generations)
                print(
                    f"p={p:.0%} {policy:13s} rounds/gen={x['rounds_mean']:.2f} 1-round={x['rounds_1']:.0%} "
                    f"gen/trained={x['gen_per_trained']:.2f} (2nd half {x['gen_per_trained_2nd']:.2f}) "
                    f"skipped={x['skipped_share']:.0%} passes={x['epochs']:.1f} old-logp ratio={x['old_ratio']:.2f} "
                    f"wall={r.wall:.1f}s issues={len(r.issues)}",
                    flush=True,
                )
    total = time.perf_counter() - t0
    meta["loadavg_end"] = reporting.load_average()
    payload = {
        "meta": meta,
        "command": reporting.command_line(__file__, argv),
        "wall_seconds": total,
        "cli": vars(cli),
        "params": params,
        "results": [asdict(r) for r in results],
    }
    text = reporting.write_report(cli.out, payload, render)
    print(text)
    print(f"wrote {cli.out} and its .json ({total:.0f} s)")
    return 1 if any(r.issues for r in results) else 0


def notes(cli: argparse.Namespace, total: float, cpus: int | None) -> list[str]:
    target = cli.batch_size * cli.steps_per_generation // cli.num_generations
    return [
        f"Caveats: one seed, {cli.steps} optimizer steps ({-(-cli.steps // cli.steps_per_generation)} generation "
        f"batches) and only {target} groups per generation batch, so per-batch counts are coarse and differences of "
        "a few percent are within noise. Wall times come from a tiny model on "
        f"{cpus} CPU cores where a round costs mostly fixed overhead (generation call, reward, "
        "bookkeeping) whatever its size; with a real model the cost of generation grows with the rows generated, so "
        "*rounds per generation batch* (sequential generation calls), *groups generated per trained group* "
        "(generation volume) and the old-log-prob row ratio are the numbers that transfer, not the seconds. The "
        "machine is shared, so wall times also carry noise from other processes (see the load average).",
        f"Whole benchmark (warm-up and all configurations): {total:.0f} s.",
    ]


if __name__ == "__main__":
    sys.exit(main())
