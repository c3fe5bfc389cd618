"""Reward functions in TRL's calling convention: `f(prompts, completions, completion_ids, **kwargs) -> list[float]`."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import re
import signal
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation, localcontext

from .core import overlong_penalty


OVERLONG_REWARD_NAME = "overlong_penalty"
MATH_TIMEOUT_SECONDS = 5.0

logger = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------------------------- math (math-verify)

_ANSWER_LINE_RE = re.compile(r"answer\s*:\s*([^\n]*)", re.IGNORECASE)
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TIMEOUT_NOTICE = "Timeout is disabled"  # math-verify's warning when its signal-based timeout is off (ours is on)


def extract_final_answer(text: str) -> str | None:
    """
    The final-answer text of a math solution, or `None` when it has no marked answer.

    Looks, in order, at the rest of the line after the last `Answer:` (DAPO-Math-17k's format, case-insensitive,
    unwrapping a `\\boxed{}` in it), after the last `####` (GSM8K), and in the last `\\boxed{...}` (nested braces
    balanced). Surrounding `$`/`\\(...\\)`, markdown bold and a final period are stripped.

    Example:
    ```python
    >>> extract_final_answer("So x = 4.\\nAnswer: $\\\\frac{1}{2}$.")
    '\\\\frac{1}{2}'
    >>> extract_final_answer("We get \\\\boxed{\\\\sqrt{\\\\frac{3}{4}}} and that is it.")
    '\\\\sqrt{\\\\frac{3}{4}}'
    >>> extract_final_answer("**Answer:** 34"), extract_final_answer("no marked answer, just 42")
    ('34', None)

    ```
    """
    if not isinstance(text, str):
        return None
    candidates = [m.strip() for m in _ANSWER_LINE_RE.findall(text)]
    candidates = [c for c in candidates if c.strip("*$ .")]
    if not candidates:
        candidates = [h.strip() for h in _HASHES_RE.findall(text) if h.strip()]
    if candidates:
        answer = candidates[-1]
        boxed = _boxed_contents(answer)
        return _strip_answer(boxed[-1] if boxed else answer)
    boxed = _boxed_contents(text)
    return _strip_answer(boxed[-1]) if boxed else None


def _strip_answer(answer: str) -> str:
    answer = answer.strip().strip("*").strip()
    changed = True
    while changed:
        changed = False
        if answer.endswith("."):
            answer, changed = answer[:-1].rstrip(), True
        for left, right in _MATH_DELIMITERS:
            if len(answer) >= len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
                answer, changed = answer[len(left) : len(answer) - len(right)].strip(), True
                break
    return answer


class _VerifyTimeout(BaseException):
    """Raised into the grading thread when its time is up (a BaseException: math-verify's handlers let it through)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """
    Raises `_VerifyTimeout` in the calling thread after `seconds`, in any thread (math-verify's own timeout uses
    `signal.alarm`, which only works in the main thread, and whole seconds).

    In the main thread (where TRL calls synchronous reward functions) a `SIGALRM` timer interrupts even a long
    big-integer computation (`9^{9^{9^9}}`), as CPython checks for signals inside those loops. In other threads
    (TRL's async reward functions) a watchdog raises the exception asynchronously, which lands between two Python
    bytecodes: sympy's Python code is interrupted, one long call into C is not.
    """
    if not seconds or seconds <= 0:
        yield
    elif threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _signal_time_limit(seconds):
            yield
    else:
        with _watchdog_time_limit(seconds):
            yield


@contextlib.contextmanager
def _signal_time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise _VerifyTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _watchdog_time_limit(seconds: float):
    thread_id, lock, state = ctypes.c_ulong(threading.get_ident()), threading.Lock(), {"done": False, "fired": False}

    def fire():
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread_id, ctypes.py_object(_VerifyTimeout))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:  # not raised yet: clear it, so that it cannot surface after the block
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread_id, None)


def _math_verify():
    """The `math_verify` module, with its "timeout is disabled" warning silenced (we time-limit the calls)."""
    try:
        import math_verify
    except ImportError as error:
        raise ImportError(
            "math_accuracy needs the math-verify package, a dapo-trl dependency: pip install 'math-verify>=0.9,<0.10'"
        ) from error
    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTimeoutNotice) for f in log.filters):
            log.addFilter(_DropTimeoutNotice())
    return math_verify


class _DropTimeoutNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIMEOUT_NOTICE)


def _parse_math(text: str, marked: bool):
    """math-verify's parse of an answer (`marked`: an extracted answer or a gold, parsed as one LaTeX expression) or
    of a whole completion without a marked answer (math-verify's own extraction)."""
    mv = _math_verify()
    if marked:
        text = f"${text}$"
        config = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    else:
        config = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
    return mv.parse(text, extraction_config=config, fallback_mode="no_fallback", parsing_timeout=None)


def _parse_gold(gold) -> list:
    text = str(gold).strip()
    answer = extract_final_answer(text)  # a worked solution (`\boxed{}`, `####`, `Answer:`) or the answer itself
    return _parse_math(_strip_answer(text) if answer is None else answer, marked=True)


MAX_ANSWER_DIGITS = 10_000  # a predicted answer whose value could have more digits is wrong without evaluating it


def _digits_bound(expr) -> float:
    """
    Upper bound of the number of decimal digits of `expr`'s numbers once evaluated (numerators and denominators),
    from its tree alone: a power tower like `9^{9^{9}}` is caught before sympy starts a big-integer computation that
    no timeout can interrupt outside the main thread.

    Example:
    ```python
    >>> import sympy
    >>> _digits_bound(sympy.Pow(2, 10, evaluate=False)) < 10, _digits_bound(sympy.factorial(sympy.Integer(10) ** 100, evaluate=False))
    (True, inf)

    ```
    """
    import sympy

    if expr.is_Rational:
        return math.log10(max(abs(expr.p), expr.q) + 1)
    if expr.is_Float:
        return 20.0
    if isinstance(expr, sympy.Pow):
        base, exponent = _digits_bound(expr.base), _digits_bound(expr.exp)
        return math.inf if exponent > 7 else base * 10**exponent + 1
    if isinstance(expr, sympy.factorial):
        n = _digits_bound(expr.args[0])
        return math.inf if n > 6 else n * 10**n + 1
    if not expr.args:
        return 1.0
    return sum(_digits_bound(arg) for arg in expr.args) + 1


def _too_large(predicted: list) -> bool:
    import sympy

    try:
        return any(_digits_bound(p) > MAX_ANSWER_DIGITS for p in predicted if isinstance(p, sympy.Basic))
    except (RecursionError, TypeError, ValueError, AttributeError, OverflowError):
        return False  # an unusual tree: the time limit still applies


def _grade(gold_parsed: list, completion: str) -> bool:
    answer = extract_final_answer(completion)
    predicted = _parse_math(answer, marked=True) if answer is not None else _parse_math(completion, marked=False)
    if not predicted or _too_large(predicted):
        return False
    return _math_verify().verify(gold_parsed, predicted, timeout_seconds=None)


def _gold_answers(n: int, solution, ground_truth, kwargs) -> list:
    """Gold answers from the first column present: `ground_truth`, `reward_model` (verl's `{"ground_truth": ...}`
    dicts, as in DAPO-Math-17k), `answer`, `solution`."""
    if ground_truth is not None:
        return list(ground_truth)
    if kwargs.get("reward_model") is not None:
        return [row.get("ground_truth") if isinstance(row, dict) else None for row in kwargs["reward_model"]]
    for golds in (kwargs.get("answer"), solution):
        if golds is not None:
            return list(golds)
    raise ValueError(
        "math_accuracy needs the gold answers in a dataset column `ground_truth`, `reward_model` (a dict with "
        f"`ground_truth`), `answer` or `solution`; got the columns {sorted(kwargs)} for {n} completions."
    )


def math_accuracy(
    completions,
    solution=None,
    ground_truth=None,
    *,
    signed: bool = False,
    timeout_seconds: float | None = MATH_TIMEOUT_SECONDS,
    **kwargs,
) -> list[float | None]:
    """
    Correctness reward for math answers, decided by [math-verify](https://github.com/huggingface/Math-Verify).

    The final answer is read with [`extract_final_answer`] (the last `Answer:` line that DAPO-Math-17k's prompts ask
    for, else `####`, else the last `\\boxed{}`) and parsed as one LaTeX expression; a completion without a marked
    answer is handed whole to math-verify's own extraction. math-verify then decides equivalence (`\\frac{1}{2}` =
    `0.5` = `1/2`, `2\\sqrt{2}` = `\\sqrt{8}`, sets, intervals, `50\\%` = `0.5`, ...).

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Plain completions, or conversational ones (the last message's `content` is graded).
        solution, ground_truth (`list`, *optional*):
            Gold answers (a bare answer or a worked solution ending in `\\boxed{}`, `####` or `Answer:`). The first
            column present is used: `ground_truth`, then `reward_model` (verl's and DAPO-Math-17k's dicts with a
            `ground_truth` key, passed through `kwargs`), `answer`, `solution`.
        signed (`bool`, *optional*, defaults to `False`):
            Reward wrong answers with -1.0 (the DAPO paper's +1/-1) instead of 0.0. See [`math_accuracy_signed`].
        timeout_seconds (`float` or `None`, *optional*, defaults to `5.0`):
            Time limit for grading one completion (parse and verify); a completion that exceeds it is wrong. Works in
            any thread, unlike math-verify's own signal-based timeout. `None` or `0`: no limit.

    Returns:
        `list[float | None]`: 1.0 correct, 0.0 (or -1.0 with `signed`) wrong or no answer; `None` when the gold
        answer itself cannot be parsed (TRL leaves such rows out of the group statistics).

    Example:
    ```python
    >>> math_accuracy(["... so x = 1/2.\\nAnswer: 1/2", "Answer: $\\\\frac{2}{3}$"], ground_truth=["0.5", "0.5"])
    [1.0, 0.0]
    >>> math_accuracy([[{"role": "assistant", "content": "Answer: 34"}]], reward_model=[{"ground_truth": "34"}])
    [1.0]
    >>> math_accuracy(["Answer: 3", "Answer: 3"], solution=["\\\\boxed{3}", "\\\\frac{1}{"], signed=True)
    [1.0, None]

    ```
    """
    golds = _gold_answers(len(completions), solution, ground_truth, kwargs)
    _math_verify()  # imported outside the time limit: the first import takes about a second
    if len(golds) != len(completions):
        raise ValueError(f"math_accuracy got {len(completions)} completions but {len(golds)} gold answers.")
    wrong, parsed_golds, rewards, timeouts = (-1.0 if signed else 0.0), {}, [], 0
    for completion, gold in zip(completions, golds):
        key = None if gold is None else str(gold)
        if key is not None and key not in parsed_golds:
            try:
                with _time_limit(timeout_seconds):
                    parsed_golds[key] = _parse_gold(key)
            except _VerifyTimeout:
                parsed_golds[key], timeouts = [], timeouts + 1
        if key is None or not parsed_golds[key]:
            rewards.append(None)
            continue
        try:
            with _time_limit(timeout_seconds):
                correct = _grade(parsed_golds[key], _completion_text(completion))
        except _VerifyTimeout:
            correct, timeouts = False, timeouts + 1
        rewards.append(1.0 if correct else wrong)
    if timeouts:
        logger.warning("math_accuracy: %d of %d answers timed out after %ss", timeouts, len(golds), timeout_seconds)
    return rewards


def math_accuracy_signed(completions, solution=None, ground_truth=None, **kwargs) -> list[float | None]:
    """
    [`math_accuracy`] with the DAPO paper's rewards: +1.0 for a correct final answer, -1.0 otherwise.

    Its own function (not a `partial`) so that TRL logs it as `rewards/math_accuracy_signed/mean` and
    `DAPOConfig.dynamic_sampling_metric` can name it.

    Example:
    ```python
    >>> math_accuracy_signed(["Answer: 12", "Answer: 13", "I give up"], ground_truth=[12, 12, 12])
    [1.0, -1.0, -1.0]

    ```
    """
    return math_accuracy(completions, solution=solution, ground_truth=ground_truth, signed=True, **kwargs)
