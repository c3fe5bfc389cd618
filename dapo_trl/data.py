"""Datasets for the GSM8K recipe: a built-in, offline GSM8K-style arithmetic task, GSM8K prompt formatting, and the
small supervised warm start and greedy evaluation used by the tiny demo (`recipes/gsm8k.py --preset tiny`).

Every example has a conversational `prompt` (`[{"role": "user", "content": ...}]`) and a GSM8K-style `answer`: a short
worked solution whose last line is `#### <number>`, which [`dapo_trl.rewards.gsm8k_accuracy`] grades against.

Example:
```python
>>> from dapo_trl.data import arithmetic_splits
>>> splits = arithmetic_splits(n_train=4, n_test=2, seed=0)
>>> splits["train"][0]["prompt"]
[{'role': 'user', 'content': '12+13+1='}]
>>> print(splits["train"][0]["answer"])
12+13=25
25+1=26
#### 26

```
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable

import torch
from datasets import Dataset, DatasetDict

from .rewards import gsm8k_accuracy


__all__ = [
    "GSM8K_SYSTEM_PROMPT",
    "arithmetic_dataset",
    "arithmetic_problem",
    "arithmetic_splits",
    "early_answer",
    "greedy_accuracy",
    "gsm8k_to_conversational",
    "supervised_warm_start",
]

GSM8K_SYSTEM_PROMPT = (
    "Solve the math problem. Reason step by step, then give the final answer alone on the last line, in the form "
    "'#### <number>'."
)


def arithmetic_problem(rng: random.Random, num_terms: int = 3, max_value: int = 20) -> tuple[str, str]:
    """
    One random sum `a+b+c=` of `num_terms` integers in `[0, max_value]`, and its worked solution.

    The solution adds one term per line (`a+b=s`, `s+c=t`, ...) and ends with `#### t`, like GSM8K.

    Example:
    ```python
    >>> question, solution = arithmetic_problem(random.Random(0), num_terms=3, max_value=20)
    >>> question, solution.splitlines()
    ('12+13+1=', ['12+13=25', '25+1=26', '#### 26'])

    ```
    """
    if num_terms < 2:
        raise ValueError(f"num_terms must be >= 2, got {num_terms}")
    terms = [rng.randint(0, max_value) for _ in range(num_terms)]
    lines, total = [], terms[0]
    for term in terms[1:]:
        lines.append(f"{total}+{term}={total + term}")
        total += term
    question = "+".join(map(str, terms)) + "="
    return question, "\n".join([*lines, f"#### {total}"])


def early_answer(solution: str) -> str:
    """
    The "lazy" version of a worked arithmetic solution: it stops after the first line and reports that partial sum.

    It is a wrong answer whenever the problem has more than two terms (and the later terms are not all zero). The tiny
    demo mixes a fraction of these into its warm-start data (`supervised_warm_start(early_answer_rate=...)`), like
    sloppy solutions in a real SFT set: the model then often answers too early when decoding greedily, while sampling
    still finishes the sum some of the time, which is exactly what RL on a correctness reward can reinforce.

    Example:
    ```python
    >>> early_answer("12+13=25\\n25+1=26\\n#### 26")
    '12+13=25\\n#### 25'

    ```
    """
    first = solution.splitlines()[0]
    return f"{first}\n#### {first.rsplit('=', 1)[-1]}"


def arithmetic_dataset(
    n: int,
    seed: int = 0,
    num_terms: int = 3,
    max_value: int = 20,
    exclude: Iterable[str] = (),
) -> Dataset:
    """
    `n` distinct GSM8K-style arithmetic problems, deterministic given the arguments.

    Columns: `prompt` (conversational, one user message holding the question), `question` (e.g. `"3+14+7="`) and
    `answer` (worked solution ending in `#### <sum>`). Questions listed in `exclude` are never drawn, which is how
    [`arithmetic_splits`] keeps its held-out split disjoint from the training prompts.

    Args:
        n (`int`): Number of problems.
        seed (`int`, *optional*, defaults to `0`): Seed of the problem generator.
        num_terms (`int`, *optional*, defaults to `3`): Integers summed per problem.
        max_value (`int`, *optional*, defaults to `20`): Largest term.
        exclude (iterable of `str`, *optional*): Questions to leave out.

    Example:
    ```python
    >>> dataset = arithmetic_dataset(3, seed=1)
    >>> list(dataset["question"])
    ['4+18+2=', '8+3+15=', '14+15+20=']
    >>> dataset[0]["answer"].splitlines()[-1]
    '#### 24'

    ```
    """
    excluded = set(exclude)
    available = (max_value + 1) ** num_terms - len(excluded)
    if n > available:
        raise ValueError(f"Only {available} distinct problems with num_terms={num_terms}, max_value={max_value}.")
    rng = random.Random(seed)
    seen: set[str] = set()
    questions, answers = [], []
    while len(questions) < n:
        question, solution = arithmetic_problem(rng, num_terms, max_value)
        if question in seen or question in excluded:
            continue
        seen.add(question)
        questions.append(question)
        answers.append(solution)
    prompts = [[{"role": "user", "content": q}] for q in questions]
    return Dataset.from_dict({"prompt": prompts, "question": questions, "answer": answers})


def arithmetic_splits(n_train: int, n_test: int, seed: int = 0, **kwargs) -> DatasetDict:
    """
    Disjoint `train` and `test` (held-out) splits of [`arithmetic_dataset`]: no test question is a train question.

    Keyword arguments (`num_terms`, `max_value`) go to [`arithmetic_dataset`].

    Example:
    ```python
    >>> splits = arithmetic_splits(n_train=100, n_test=20, seed=0)
    >>> len(splits["train"]), len(splits["test"])
    (100, 20)
    >>> set(splits["train"]["question"]) & set(splits["test"]["question"])
    set()

    ```
    """
    train = arithmetic_dataset(n_train, seed=seed, **kwargs)
    test = arithmetic_dataset(n_test, seed=seed + 1_000_003, exclude=train["question"], **kwargs)
    return DatasetDict(train=train, test=test)


def gsm8k_to_conversational(dataset: Dataset, system_prompt: str = GSM8K_SYSTEM_PROMPT) -> Dataset:
    """
    Add a conversational `prompt` column (system prompt + the `question`) to a GSM8K split; `answer` is kept.

    Example:
    ```python
    >>> ds = gsm8k_to_conversational(Dataset.from_dict({"question": ["1+1?"], "answer": ["1+1=2\\n#### 2"]}))
    >>> [m["role"] for m in ds[0]["prompt"]]
    ['system', 'user']

    ```
    """

    def to_prompt(example):
        return {
            "prompt": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": example["question"]},
            ]
        }

    return dataset.map(to_prompt)


def _chat_text(tokenizer, prompt: list[dict]) -> str:
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def supervised_warm_start(
    model,
    tokenizer,
    dataset: Dataset,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    early_answer_rate: float = 0.0,
) -> dict[str, float]:
    """
    A short supervised phase (plain torch loop, AdamW, constant learning rate): trains `model` on
    `prompt -> answer` of `dataset`, with the loss on the answer tokens and the final EOS only.

    Much faster than a `Trainer` for tiny models on CPU. Returns `{"loss": last loss, "seconds": wall time}`.

    With `early_answer_rate > 0`, that fraction of the examples (drawn once, with `seed`) is trained on its
    [`early_answer`] instead of the full worked solution: a deliberately imperfect warm start that RL can then improve.

    Example:
    ```python
    >>> from dapo_trl.testing import build_char_tokenizer, build_tiny_model
    >>> tokenizer = build_char_tokenizer()
    >>> model = build_tiny_model(tokenizer)
    >>> stats = supervised_warm_start(model, tokenizer, arithmetic_dataset(8), steps=2, batch_size=4, progress=False)
    >>> sorted(stats)
    ['loss', 'seconds']

    ```
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    prompts = [tokenizer(_chat_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in dataset["prompt"]]
    if not 0.0 <= early_answer_rate <= 1.0:
        raise ValueError(f"early_answer_rate must be in [0, 1], got {early_answer_rate}")
    rng = random.Random(seed)
    targets = [early_answer(a) if rng.random() < early_answer_rate else a for a in dataset["answer"]]
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in targets]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    loss_value = math.nan
    order = torch.randperm(len(prompts), generator=generator).tolist()
    position = 0
    for _ in tqdm(range(steps), desc="warm start (SFT)", disable=not progress):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(prompts), generator=generator).tolist(), 0
        batch = order[position : position + batch_size]
        position += batch_size
        width = max(len(prompts[i]) + len(answers[i]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # right padding
            ids = prompts[i] + answers[i]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, len(prompts[i]) : len(ids)] = torch.tensor(answers[i])
            attention_mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
    model.eval()
    return {"loss": loss_value, "seconds": time.perf_counter() - start}


@torch.no_grad()
def greedy_accuracy(
    model,
    tokenizer,
    dataset: Dataset,
    max_new_tokens: int = 32,
    batch_size: int = 128,
    return_completions: bool = False,
) -> float | tuple[float, list[str]]:
    """
    Greedy-decoding accuracy of `model` on `dataset` (`prompt` and `answer` columns), graded by
    [`dapo_trl.rewards.gsm8k_accuracy`].

    Example:
    ```python
    >>> accuracy = greedy_accuracy(model, tokenizer, arithmetic_dataset(16, seed=1))  # doctest: +SKIP
    >>> 0.0 <= accuracy <= 1.0  # doctest: +SKIP
    True

    ```
    """
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    completions: list[str] = []
    try:
        for start in range(0, len(dataset), batch_size):
            prompts = [_chat_text(tokenizer, p) for p in dataset["prompt"][start : start + batch_size]]
            inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            completions += tokenizer.batch_decode(output[:, inputs["input_ids"].size(1) :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    rewards = gsm8k_accuracy(completions, dataset["answer"])
    accuracy = sum(rewards) / max(len(rewards), 1)
    return (accuracy, completions) if return_completions else accuracy
