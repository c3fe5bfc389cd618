"""Datasets for the recipes: DAPO-Math-17k and AIME-style evaluation sets in verl's layout (`recipes/dapo_math.py`),
and for the GSM8K recipe a built-in, offline GSM8K-style arithmetic task, GSM8K prompt formatting, and the small
supervised warm start and greedy evaluation used by the tiny demo (`recipes/gsm8k.py --preset tiny`).

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

import hashlib
import math
import os
import random
import time
from collections.abc import Iterable

import torch
from datasets import Dataset, DatasetDict

from .evaluation import chat_text, generate_completions
from .rewards import gsm8k_accuracy


__all__ = [
    "DAPO_MATH_COLUMNS",
    "DAPO_MATH_TEMPLATE",
    "GSM8K_SYSTEM_PROMPT",
    "dapo_math_prompt",
    "dedupe_prompts",
    "load_math_dataset",
    "to_dapo_math_layout",
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
    num_terms: int | tuple[int, int] = 3,
    max_value: int = 20,
    exclude: Iterable[str] = (),
) -> Dataset:
    """
    `n` distinct GSM8K-style arithmetic problems, deterministic given the arguments.

    Columns: `prompt` (conversational, one user message holding the question), `question` (e.g. `"3+14+7="`), `answer`
    (worked solution ending in `#### <sum>`) and `num_terms`. Questions listed in `exclude` are never drawn, which is
    how [`arithmetic_splits`] keeps its held-out split disjoint from the training prompts.

    With a range `num_terms=(low, high)` each problem draws its number of terms uniformly from it: the worked solution
    has one line per addition, so its length grows with the difficulty (the chain task of `benchmarks/ablation.py`).

    Args:
        n (`int`): Number of problems.
        seed (`int`, *optional*, defaults to `0`): Seed of the problem generator.
        num_terms (`int` or `tuple[int, int]`, *optional*, defaults to `3`): Integers summed per problem, or the
            inclusive range they are drawn from.
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
    low, high = (num_terms, num_terms) if isinstance(num_terms, int) else num_terms
    if not 2 <= low <= high:
        raise ValueError(f"num_terms must be >= 2 (or a range (low, high) with 2 <= low <= high), got {num_terms}")
    excluded = set(exclude)
    available = sum((max_value + 1) ** size for size in range(low, high + 1)) - len(excluded)
    if n > available:
        raise ValueError(f"Only {available} distinct problems with num_terms={num_terms}, max_value={max_value}.")
    rng = random.Random(seed)
    seen: set[str] = set()
    questions, answers, sizes = [], [], []
    while len(questions) < n:
        size = low if low == high else rng.randint(low, high)  # a fixed size draws nothing: same problems as before
        question, solution = arithmetic_problem(rng, size, max_value)
        if question in seen or question in excluded:
            continue
        seen.add(question)
        questions.append(question)
        answers.append(solution)
        sizes.append(size)
    prompts = [[{"role": "user", "content": q}] for q in questions]
    return Dataset.from_dict({"prompt": prompts, "question": questions, "answer": answers, "num_terms": sizes})


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
    prompts = [tokenizer(chat_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in dataset["prompt"]]
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
    [`dapo_trl.rewards.gsm8k_accuracy`]; generation is [`dapo_trl.evaluation.generate_completions`].

    Example:
    ```python
    >>> accuracy = greedy_accuracy(model, tokenizer, arithmetic_dataset(16, seed=1))  # doctest: +SKIP
    >>> 0.0 <= accuracy <= 1.0  # doctest: +SKIP
    True

    ```
    """
    outputs = generate_completions(model, tokenizer, dataset["prompt"], max_new_tokens, batch_size=batch_size)
    completions = [samples[0] for samples in outputs]
    rewards = gsm8k_accuracy(completions, dataset["answer"])
    accuracy = sum(rewards) / max(len(rewards), 1)
    return (accuracy, completions) if return_completions else accuracy


# ------------------------------------------------------------------------------------------ DAPO-Math-17k and AIME

# The instruction every DAPO-Math-17k prompt carries (BytedTsinghua-SIA/DAPO-Math-17k, `prompt[0]["content"]`).
DAPO_MATH_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)
# verl's RL dataset layout, which DAPO-Math-17k and DAPO's AIME-2024 use.
DAPO_MATH_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")
_PROBLEM_COLUMNS = ("problem", "question")
_ANSWER_COLUMNS = ("answer", "ground_truth", "solution")


def dapo_math_prompt(problem: str) -> list[dict]:
    """
    A problem as DAPO-Math-17k asks it: one user message with the `Answer: $Answer` instruction.

    Example:
    ```python
    >>> prompt = dapo_math_prompt("What is $1+1$?")
    >>> prompt[0]["role"], prompt[0]["content"].splitlines()[2]
    ('user', 'What is $1+1$?')

    ```
    """
    return [{"role": "user", "content": DAPO_MATH_TEMPLATE.format(problem=problem.strip())}]


def _column(names: Iterable[str], wanted: tuple[str, ...]) -> str | None:
    by_lower = {name.lower(): name for name in names}
    return next((by_lower[w] for w in wanted if w in by_lower), None)


def to_dapo_math_layout(dataset: Dataset, data_source: str = "aime") -> Dataset:
    """
    A math dataset in verl's layout (DAPO-Math-17k's): `prompt` (chat messages), `reward_model` (`{"ground_truth",
    "style"}`), `data_source`, `ability`, `extra_info` (`{"index"}`).

    A dataset that has `prompt` and `reward_model` already (DAPO-Math-17k, DAPO's AIME-2024) is returned unchanged.
    Otherwise the problem comes from a `problem`/`question` column and the gold from `answer`, `ground_truth` or
    `solution` (first present; names case-insensitive, as in `HuggingFaceH4/aime_2024`, `Maxwell-Jia/AIME_2024`,
    `AI-MO/aimo-validation-aime`), and the prompt is [`dapo_math_prompt`]; other columns are dropped.

    Example:
    ```python
    >>> aime = Dataset.from_dict({"ID": ["2024-I-1"], "Problem": ["Find $x$."], "Answer": [204]})
    >>> row = to_dapo_math_layout(aime)[0]
    >>> row["reward_model"], row["extra_info"], row["prompt"][0]["content"].splitlines()[2]
    ({'ground_truth': '204', 'style': 'rule'}, {'index': '2024-I-1'}, 'Find $x$.')

    ```
    """
    names = dataset.column_names
    if "prompt" in names and "reward_model" in names:
        return dataset
    problem, answer = _column(names, _PROBLEM_COLUMNS), _column(names, _ANSWER_COLUMNS)
    if problem is None or answer is None:
        raise ValueError(
            f"Cannot read a math dataset with columns {names}: expected `prompt` and `reward_model` (verl's layout, "
            "as DAPO-Math-17k) or a problem column (`problem`/`question`) and an answer column "
            "(`answer`/`ground_truth`/`solution`)."
        )
    index = _column(names, ("id", "index", "unique_id"))

    def convert(row, i):
        return {
            "data_source": data_source,
            "prompt": dapo_math_prompt(str(row[problem])),
            "ability": "MATH",
            "reward_model": {"ground_truth": str(row[answer]).strip(), "style": "rule"},
            "extra_info": {"index": str(row[index]) if index else str(i)},
        }

    return dataset.map(convert, with_indices=True, remove_columns=names)


def _prompt_key(prompt) -> str:
    text = prompt if isinstance(prompt, str) else "\x00".join(f"{m['role']}\x01{m['content']}" for m in prompt)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def dedupe_prompts(dataset: Dataset) -> Dataset:
    """
    The first row of every distinct `prompt`, in order. Repeated rows would weigh some problems more in training and
    in avg@k (an evaluation set stored as each problem repeated k times becomes one row per problem).

    Example:
    ```python
    >>> ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": c}] for c in "abab"], "i": [0, 1, 2, 3]})
    >>> list(dedupe_prompts(ds)["i"])
    [0, 1]

    ```
    """
    keys = dataset.map(lambda b: {"_key": [_prompt_key(p) for p in b["prompt"]]}, batched=True)["_key"]
    seen: set[str] = set()
    first = [i for i, key in enumerate(keys) if not (key in seen or seen.add(key))]
    return dataset if len(first) == len(dataset) else dataset.select(first)


_LOCAL_FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def load_math_dataset(
    name_or_path: str,
    split: str = "train",
    config: str | None = None,
    dedupe: bool = True,
    limit: int | None = None,
) -> Dataset:
    """
    Load a math dataset (Hub id, local dataset folder, or a `.parquet`/`.json`/`.jsonl`/`.csv` file) with `datasets`,
    in DAPO-Math-17k's layout ([`to_dapo_math_layout`]), repeated prompts removed ([`dedupe_prompts`]), at most
    `limit` rows.

    Example:
    ```python
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "aime.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"problem": "Find $x$.", "answer": "7"}\\n' * 3)
    >>> dataset = load_math_dataset(path)
    >>> len(dataset), dataset[0]["reward_model"]["ground_truth"]
    (1, '7')

    ```
    """
    from datasets import load_dataset

    extension = os.path.splitext(name_or_path)[1].lower()
    if os.path.isfile(name_or_path) and extension in _LOCAL_FORMATS:
        dataset = load_dataset(_LOCAL_FORMATS[extension], data_files=name_or_path, split="train")
    else:
        dataset = load_dataset(name_or_path, config, split=split)
    dataset = to_dapo_math_layout(dataset)
    if dedupe:
        dataset = dedupe_prompts(dataset)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset
