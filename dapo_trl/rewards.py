"""Reward functions in TRL's calling convention: `f(prompts, completions, completion_ids, **kwargs) -> list[float]`."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation, localcontext

from .core import overlong_penalty


OVERLONG_REWARD_NAME = "overlong_penalty"


def overlong_penalty_reward(
    max_completion_length: int, buffer_length: int, penalty_factor: float = 1.0
) -> Callable[..., list[float]]:
    """
    DAPO's soft overlong punishment as a TRL reward function named `overlong_penalty`.

    It reads the token length of each completion (`completion_ids`), see [`dapo_trl.core.overlong_penalty`].
    `DAPOTrainer` adds it itself when `DAPOConfig.overlong_buffer_length` is set.

    Example:
    ```python
    >>> reward = overlong_penalty_reward(max_completion_length=16, buffer_length=4)
    >>> reward(prompts=["p", "p"], completions=["a", "b"], completion_ids=[[1] * 10, [1] * 14])
    [0.0, -0.5]

    ```
    """
    overlong_penalty(  # validates the arguments now rather than at the first reward call
        [0], max_completion_length, buffer_length, penalty_factor
    )

    def reward(prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        lengths = [len(ids) for ids in completion_ids]
        return overlong_penalty(lengths, max_completion_length, buffer_length, penalty_factor).tolist()

    reward.__name__ = reward.__qualname__ = OVERLONG_REWARD_NAME
    return reward


# ---------------------------------------------------------------------------------------------------------- GSM8K

_NUMBER = r"-?\$?-?\d[\d,]*(?:\.\d+)?|-?\$?-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_HASHES_RE = re.compile(r"####\s*(.*)")
_ANSWER_IS_RE = re.compile(r"answer\s+is\s*:?\s*(.*)", re.IGNORECASE)


def _boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` in `text`, with nested braces balanced."""
    contents = []
    start = text.find("\\boxed{")
    while start != -1:
        depth, i = 1, start + len("\\boxed{")
        begin = i
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            contents.append(text[begin : i - 1])
        start = text.find("\\boxed{", i)
    return contents


def _normalize_number(token: str) -> str | None:
    """`"$1,234.50"` -> `"1234.5"`, `"5.0"` -> `"5"`, `"-3"` -> `"-3"`; `None` if `token` holds no number."""
    cleaned = token.replace("$", "").replace(",", "")
    negative = cleaned.count("-") % 2 == 1
    cleaned = cleaned.replace("-", "")
    try:
        with localcontext() as context:
            context.prec = max(len(cleaned), 28)  # exact for any length
            text = format(Decimal(cleaned).normalize(), "f")  # "5.0" -> "5", "0.50" -> "0.5", "1E+3" never appears
    except (InvalidOperation, ValueError):
        return None
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if negative and text != "0":
        text = "-" + text
    return text


def _first_number(text: str) -> str | None:
    match = _NUMBER_RE.search(text)
    return _normalize_number(match.group()) if match else None


def _last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(text)
    return _normalize_number(matches[-1]) if matches else None


def extract_answer(text: str) -> str | None:
    """
    The final numeric answer of a solution, normalized (no `$`, commas, units or trailing `.0`), or `None`.

    Looks, in order, for the number after the last `####` (GSM8K), in the last `\\boxed{...}`, after the last
    "The answer is", and otherwise takes the last number of the text.

    Example:
    ```python
    >>> extract_answer("3+4=7\\n#### 7")
    '7'
    >>> extract_answer("So she pays $1,250.00 in total.")
    '1250'
    >>> extract_answer("\\\\boxed{-3}"), extract_answer("The answer is 12 apples."), extract_answer("no digits")
    ('-3', '12', None)

    ```
    """
    if not isinstance(text, str):
        return None
    hashes = _HASHES_RE.findall(text)
    if hashes and (number := _first_number(hashes[-1])) is not None:
        return number
    boxed = _boxed_contents(text)
    if boxed and (number := _last_number(boxed[-1])) is not None:
        return number
    answer_is = _ANSWER_IS_RE.findall(text)
    if answer_is and (number := _first_number(answer_is[-1])) is not None:
        return number
    return _last_number(text)


def _completion_text(completion) -> str:
    """Plain string, or the content of the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if completion:
        return _completion_text(completion[-1])
    return ""


def gsm8k_accuracy(completions, answer, **kwargs) -> list[float]:
    """
    Binary correctness reward for GSM8K-style answers: 1.0 if the completion's final number equals the gold one.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Plain completions, or conversational ones (the last message's `content` is graded).
        answer (`list[str | int | float]`):
            Gold answers: GSM8K solutions ending in `#### <n>`, or bare numbers.

    Returns:
        `list[float]`: 1.0 for a correct final answer, 0.0 otherwise (also when no number can be found).

    Example:
    ```python
    >>> gsm8k_accuracy(["2+3=5\\n#### 5", "#### 6"], answer=["2+3=5\\n#### 5", "5"])
    [1.0, 0.0]
    >>> gsm8k_accuracy([[{"role": "assistant", "content": "The answer is $1,000."}]], answer=[1000])
    [1.0]

    ```
    """
    rewards = []
    for completion, gold in zip(completions, answer):
        gold_value = _normalize_number(str(gold)) if isinstance(gold, int | float) else extract_answer(str(gold))
        predicted = extract_answer(_completion_text(completion))
        rewards.append(float(predicted is not None and predicted == gold_value))
    return rewards


_FORMAT_RE = re.compile(r"####\s*" + rf"(?:{_NUMBER})" + r"\s*")


def gsm8k_format(completions, **kwargs) -> list[float]:
    """
    Format reward: 1.0 if the completion ends with a final line `#### <number>` (the format the GSM8K system prompt
    asks for), 0.0 otherwise. Correctness is `gsm8k_accuracy`'s job; the recipe adds this one with
    `--format_reward_weight` and keeps the dynamic-sampling filter on accuracy.

    Example:
    ```python
    >>> gsm8k_format(["3+4=7\\n#### 7", "3+4=7, so 7", "#### 7 apples"])
    [1.0, 0.0, 0.0]

    ```
    """
    rewards = []
    for completion in completions:
        lines = _completion_text(completion).strip().splitlines()
        rewards.append(float(bool(lines) and _FORMAT_RE.fullmatch(lines[-1].strip()) is not None))
    return rewards
