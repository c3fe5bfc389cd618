"""Evaluation by generation: greedy or sampled completions of a prompt set, and AIME-style math metrics.

[`evaluate_math`] reports what the DAPO paper reports on AIME 2024, avg@k (the mean accuracy of `k` sampled
completions per problem, averaged over problems; the paper uses k = 32, temperature 1.0, top-p 0.7), together with
pass@k (share of problems solved at least once in the `k` samples) and greedy pass@1, graded by
[`dapo_trl.rewards.math_accuracy`]. Generation uses `model.generate` (no vLLM), shards the problems over processes
(each runs the same number of `generate` calls, as ZeRO-3 requires) and gathers the results on every process.

Example:
```python
>>> from dapo_trl.testing import build_char_tokenizer, build_tiny_model
>>> from datasets import Dataset
>>> tokenizer = build_char_tokenizer()
>>> model = build_tiny_model(tokenizer)
>>> aime = Dataset.from_dict({"prompt": [[{"role": "user", "content": "1+1="}]], "reward_model": [{"ground_truth": "2"}]})
>>> metrics = evaluate_math(model, tokenizer, aime, k=4, max_new_tokens=8)
>>> sorted(metrics)
['avg@4', 'greedy_pass@1', 'pass@4', 'problems', 'unscorable']

```
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import torch
from datasets import Dataset
from transformers import TrainerCallback

from .rewards import math_accuracy


__all__ = ["MathEvalCallback", "chat_text", "evaluate_math", "generate_completions"]


def chat_text(tokenizer, prompt: str | list[dict]) -> str:
    """The text the model sees for a prompt: the chat template with the generation prompt, or the plain string."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str | list[dict]],
    max_new_tokens: int,
    batch_size: int = 128,
    num_samples: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[list[str]]:
    """
    `num_samples` completions of each prompt (conversational prompts go through the chat template), decoded without
    special tokens: greedy with `do_sample=False`, else sampled at `temperature` / `top_p`. One `generate` call holds
    `batch_size` sequences (so `batch_size // num_samples` prompts, at least one).

    Example:
    ```python
    >>> from dapo_trl.testing import build_char_tokenizer, build_tiny_model
    >>> tokenizer = build_char_tokenizer()
    >>> out = generate_completions(build_tiny_model(tokenizer), tokenizer, ["1+1="], max_new_tokens=4, num_samples=2, do_sample=True)
    >>> len(out), len(out[0])
    (1, 2)

    ```
    """
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    per_call = max(1, batch_size // num_samples)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    completions: list[list[str]] = []
    try:
        for start in range(0, len(prompts), per_call):
            texts = [chat_text(tokenizer, p) for p in prompts[start : start + per_call]]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            decoded = tokenizer.batch_decode(output[:, inputs["input_ids"].size(1) :], skip_special_tokens=True)
            completions += [decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples)]
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return completions


def _process() -> tuple[int, int]:
    """This process's rank and the number of processes (1 outside `torch.distributed`)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _shard(n: int, process_index: int, num_processes: int) -> list[int]:
    """This process's rows, padded (with repeats) to the same count on every process."""
    per_process = -(-n // num_processes)
    mine = list(range(process_index * per_process, min(n, (process_index + 1) * per_process)))
    return mine + [mine[-1] if mine else 0] * (per_process - len(mine))


def _grade(reward: Callable, dataset: Dataset, rows: list[int], completions: list[list[str]]) -> list[list]:
    """`reward` called as TRL calls it (dataset columns as keyword arguments), one list of rewards per row."""
    records = {row: dataset[row] for row in set(rows)}
    flat = [records[row] for row, samples in zip(rows, completions) for _ in samples]
    columns = {name: [record[name] for record in flat] for name in dataset.column_names if name != "prompt"}
    prompts = [record["prompt"] for record in flat]
    scores = reward(prompts=prompts, completions=[c for samples in completions for c in samples], **columns)
    out, position = [], 0
    for samples in completions:
        out.append(scores[position : position + len(samples)])
        position += len(samples)
    return out


def evaluate_math(
    model,
    tokenizer,
    dataset: Dataset,
    k: int = 32,
    max_new_tokens: int = 1024,
    temperature: float = 1.0,
    top_p: float = 0.7,
    greedy: bool = True,
    batch_size: int = 64,
    seed: int = 0,
    reward: Callable[..., list] = math_accuracy,
    return_details: bool = False,
) -> dict | tuple[dict, list[dict]]:
    """
    AIME-style metrics of `model` on `dataset` (a `prompt` column and the gold columns `reward` reads, e.g.
    DAPO-Math-17k's `reward_model`): `avg@k`, `pass@k` (over `k` samples at `temperature`/`top_p`; `k=0` skips them),
    `greedy_pass@1` (with `greedy`), `problems` graded and `unscorable` (gold answer not parseable: left out).

    `reward` must return 1.0 for correct and 0.0 for wrong (or `None`). Sampling is seeded (`seed` plus the process
    index) without disturbing the global random state. With `return_details`, also returns one dict per problem
    (`index`, `samples`, `sample_rewards`, `greedy`, `greedy_reward`), for every process.
    """
    rank, world_size = _process()
    rows = _shard(len(dataset), rank, world_size)
    all_prompts = dataset["prompt"]
    prompts = [all_prompts[row] for row in rows]
    local = [{"index": row} for row in rows]
    if k > 0:
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + rank)
            samples = generate_completions(
                model, tokenizer, prompts, max_new_tokens, batch_size, k, True, temperature, top_p
            )
        for detail, texts, scores in zip(local, samples, _grade(reward, dataset, rows, samples)):
            detail.update(samples=texts, sample_rewards=scores)
    if greedy:
        completions = generate_completions(model, tokenizer, prompts, max_new_tokens, batch_size)
        for detail, texts, scores in zip(local, completions, _grade(reward, dataset, rows, completions)):
            detail.update(greedy=texts[0], greedy_reward=scores[0])
    gathered = [local]
    if world_size > 1:
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, local)
    details = sorted({d["index"]: d for part in gathered for d in part}.values(), key=lambda d: d["index"])
    metrics = _math_metrics(details, k, greedy)
    return (metrics, details) if return_details else metrics


def _math_metrics(details: list[dict], k: int, greedy: bool) -> dict:
    scorable = [
        d for d in details if None not in d.get("sample_rewards", []) and d.get("greedy_reward", 0) is not None
    ]
    metrics = {"problems": len(scorable), "unscorable": len(details) - len(scorable)}
    n = max(len(scorable), 1)
    if k > 0:
        metrics[f"avg@{k}"] = sum(sum(d["sample_rewards"]) / k for d in scorable) / n
        metrics[f"pass@{k}"] = sum(any(r > 0 for r in d["sample_rewards"]) for d in scorable) / n
    if greedy:
        metrics["greedy_pass@1"] = sum(d["greedy_reward"] > 0 for d in scorable) / n
    return metrics


class MathEvalCallback(TrainerCallback):
    """
    Runs [`evaluate_math`] on `dataset` when training begins (`before`), every `eval_every` optimizer steps, and when
    it ends, on the model as the trainer holds it then: on its device and, under DeepSpeed ZeRO-3, inside the
    engine (whose sharded weights `generate` can only use once training has started).

    Each evaluation adds `eval/<metric>` entries to `state.log_history` (so `trainer_state.json` and the dashboard
    have them), keeps its metrics in `results[tag]` (`"before"`, `"step<N>"`, `"after"`) and, on the main process,
    writes every sample and its reward to `OUTPUT_DIR/eval_<tag>.jsonl`. Keyword arguments go to [`evaluate_math`].

    Example:
    ```python
    >>> callback = MathEvalCallback(aime, tokenizer, k=32, max_new_tokens=20480)  # doctest: +SKIP
    >>> trainer = DAPOTrainer(..., callbacks=[callback]); trainer.train(); callback.results["after"]["avg@32"]  # doctest: +SKIP

    ```
    """

    def __init__(self, dataset: Dataset, tokenizer, before: bool = True, eval_every: int | None = None, **eval_kwargs):
        self.dataset, self.tokenizer, self.before, self.eval_every = dataset, tokenizer, before, eval_every
        self.eval_kwargs = eval_kwargs
        self.results: dict[str, dict] = {}

    def evaluate(self, tag: str, args, state, model) -> dict:
        start = time.perf_counter()
        metrics, details = evaluate_math(model, self.tokenizer, self.dataset, return_details=True, **self.eval_kwargs)
        metrics["seconds"] = time.perf_counter() - start
        self.results[tag] = metrics
        state.log_history.append({"step": state.global_step, **{f"eval/{k}": v for k, v in metrics.items()}})
        if state.is_world_process_zero:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, f"eval_{tag}.jsonl"), "w") as f:
                f.writelines(json.dumps(detail) + "\n" for detail in details)
            shown = ", ".join(f"{k} {v:.1%}" for k, v in metrics.items() if "@" in k)
            print(f"eval {tag}: {shown} on {metrics['problems']} problems ({metrics['seconds']:.0f}s)")
        return metrics

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.before and state.global_step == 0:
            self.evaluate("before", args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.eval_every and state.global_step % self.eval_every == 0 and state.global_step < state.max_steps:
            self.evaluate(f"step{state.global_step}", args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.evaluate("after", args, state, model)
