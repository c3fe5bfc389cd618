"""math_accuracy: final-answer extraction and math-verify equivalence on a table of hand-made cases, TRL calling
convention, gold columns, signed rewards and the time limit."""

import threading
import time

import pytest

from dapo_trl.rewards import _time_limit, _VerifyTimeout, extract_final_answer, math_accuracy, math_accuracy_signed


pytest.importorskip("math_verify")

# (case id, completion, gold, expected reward). Verdicts marked "math-verify:" are its behaviour, not an obvious one.
CASES = [
    # (id, completion, gold, expected)
    ("int", "Answer: 34", "34", 1.0),
    ("int-wrong", "Answer: 35", "34", 0.0),
    ("int-gold-number", "Answer: 34", 34, 1.0),
    ("dapo-last-line", "Let me think.\nSo the total is 12 + 22 = 34.\nAnswer: 34", "34", 1.0),
    ("answer-lowercase", "answer: 7", "7", 1.0),
    ("answer-markdown-bold", "**Answer:** 7", "7", 1.0),
    ("answer-dollars", "Answer: $7$", "7", 1.0),
    ("answer-trailing-period", "Answer: 7.", "7", 1.0),
    ("answer-boxed-inside", "Answer: \\boxed{7}", "7", 1.0),
    ("fraction-vs-decimal", "Answer: \\frac{1}{2}", "0.5", 1.0),
    ("decimal-vs-fraction", "Answer: 0.5", "\\frac{1}{2}", 1.0),
    ("slash-fraction", "Answer: 3/4", "\\frac{3}{4}", 1.0),
    ("dfrac", "Answer: \\dfrac{3}{4}", "\\frac34", 1.0),
    ("fraction-wrong", "Answer: \\frac{2}{3}", "\\frac{3}{4}", 0.0),
    ("repeating-decimal-rounded", "Answer: 0.333", "\\frac{1}{3}", 0.0),
    ("decimal-6-places", "Answer: 0.333333", "\\frac{1}{3}", 1.0),
    ("radical-equivalent", "Answer: 2\\sqrt{2}", "\\sqrt{8}", 1.0),
    ("radical-rationalized", "Answer: \\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", 1.0),
    ("radical-wrong", "Answer: 2\\sqrt{3}", "\\sqrt{8}", 0.0),
    ("pi-expression", "Answer: 2\\pi", "2\\pi", 1.0),
    ("pi-decimal", "Answer: 6.28", "2\\pi", 0.0),
    ("negative", "Answer: -5", "-5", 1.0),
    ("negative-sign-dropped", "Answer: 5", "-5", 0.0),
    ("negative-fraction", "Answer: -\\frac{1}{2}", "-0.5", 1.0),
    ("thousands-comma", "Answer: 1,000", "1000", 1.0),
    ("units-text", "Answer: 5 \\text{ cm}", "5", 1.0),
    ("units-plain", "Answer: 5 cm", "5", 1.0),
    ("degrees", "Answer: 30^\\circ", "30", 1.0),
    ("dollar-sign", "Answer: \\$25", "25", 1.0),
    ("percent-vs-number", "Answer: 50\\%", "50", 1.0),
    ("percent-vs-fraction", "Answer: 50\\%", "\\frac{1}{2}", 1.0),
    ("set-order", "Answer: \\{3, 1, 2\\}", "\\{1,2,3\\}", 1.0),
    ("list-vs-set", "Answer: 1, 2, 3", "\\{1, 2, 3\\}", 1.0),
    ("set-missing-element", "Answer: \\{1, 2\\}", "\\{1,2,3\\}", 0.0),
    ("interval", "Answer: (1, 2]", "(1,2]", 1.0),
    ("interval-open-vs-closed", "Answer: [1, 2]", "(1,2]", 0.0),
    ("interval-infinity", "Answer: (-\\infty, 3)", "(-\\infty,3)", 1.0),
    ("equation-vs-value", "Answer: x = 5", "5", 1.0),
    ("polynomial-expanded", "Answer: x^2+2x+1", "(x+1)^2", 1.0),
    ("power", "Answer: 2^{10}", "1024", 1.0),
    ("boxed", "Thus the result is \\boxed{42}.", "42", 1.0),
    ("boxed-nested-braces", "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 1.0),
    ("boxed-nested-boxed", "\\boxed{\\boxed{7}}", "7", 1.0),
    ("boxed-last-wins", "First I thought \\boxed{3}, but actually \\boxed{5}.", "5", 1.0),
    ("boxed-earlier-not-graded", "First I thought \\boxed{5}, but actually \\boxed{3}.", "5", 0.0),
    ("answer-line-last-wins", "Answer: 3\nWait, that is wrong.\nAnswer: 5", "5", 1.0),
    ("answer-line-beats-boxed", "\\boxed{3}\nAnswer: 5", "5", 1.0),
    ("gsm8k-hashes", "6 * 7 = 42\n#### 42", "42", 1.0),
    ("no-answer-text", "I am not sure how to solve this.", "34", 0.0),
    ("empty", "", "34", 0.0),
    ("answer-empty", "Answer:", "34", 0.0),
    ("unmarked-latex", "The value is $\\frac{1}{2}$", "\\frac{1}{2}", 1.0),
    ("malformed-latex-pred", "Answer: \\frac{1}{", "\\frac{1}{2}", 0.0),
    ("unbalanced-boxed", "\\boxed{12", "12", 0.0),
    ("malformed-gold", "Answer: 1", "\\frac{1}{", None),
    ("empty-gold", "Answer: 1", "", None),
    ("gold-worked-solution", "Answer: 9", "We add 4 and 5 to get $\\boxed{9}$.", 1.0),
    ("text-answer-choice", "Answer: \\text{(B)}", "\\text{(B)}", 1.0),
    ("text-answer-choice-wrong", "Answer: \\text{(C)}", "\\text{(B)}", 0.0),
    ("mixed-number", "Answer: 1\\frac{1}{2}", "\\frac{3}{2}", 1.0),
    ("huge-power", "Answer: 9^{9^{9^{9}}}", "5", 0.0),
    ("scientific", "Answer: 1.5 \\times 10^{3}", "1500", 1.0),
    ("matrix-like-tuple", "Answer: (1, 2)", "(1,2)", 1.0),
    ("tuple-order", "Answer: (2, 1)", "(1,2)", 0.0),
    ("trailing-explanation", "Answer: 7 (since 3+4=7)", "7", 1.0),
    ("and-list-vs-set", "Answer: 3 and 5", "3, 5", 1.0),
    ("comma-is-thousands", "Answer: 1,234", "\\{1, 234\\}", 0.0),
    ("scientific-e-notation", "Answer: 1e3", "1000", 0.0),  # math-verify: `1e3` is not read as 1000
    ("word-unit-dollars", "Answer: 5 dollars", "5", 0.0),  # math-verify: "dollars" is no unit, "d*o*l*l*a*r*s"
    ("word-unit-meters", "Answer: 5 meters", "5", 1.0),
    ("unit-mismatch", "Answer: 5 m", "5 \\text{ cm}", 1.0),  # math-verify: units are dropped, not compared
    ("percent-gold-as-number", "Answer: 50", "50\\%", 1.0),  # math-verify: a percent gold accepts 50 and 0.5
    ("percent-gold-as-fraction", "Answer: 0.5", "50\\%", 1.0),
    ("infinity-sign", "Answer: -\\infty", "\\infty", 0.0),
    ("sqrt-two-decimals", "Answer: 1.41", "\\sqrt{2}", 0.0),
    ("leading-zero", "Answer: 03", "3", 1.0),
    ("matrix", "Answer: \\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1.0),
    ("matrix-wrong", "Answer: \\begin{pmatrix}1\\\\3\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0.0),
    ("small-power-allowed", "Answer: 2^{100}", "1267650600228229401496703205376", 1.0),
]


def test_case_table_is_large_and_unique():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("completion", "gold", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_math_accuracy_case_table(completion, gold, expected):
    assert math_accuracy([completion], ground_truth=[gold]) == [expected]


def test_case_table_in_one_call_plain_conversational_and_signed():
    completions, golds, expected = zip(*[c[1:] for c in CASES])
    assert math_accuracy(list(completions), ground_truth=list(golds)) == list(expected)
    conversational = [[{"role": "assistant", "content": c}] for c in completions]
    signed = [None if e is None else 2 * e - 1 for e in expected]
    assert math_accuracy_signed(conversational, ground_truth=list(golds)) == signed
    assert math_accuracy(conversational, ground_truth=list(golds), signed=True) == signed


def test_trl_calling_convention_with_dapo_math_columns():
    """As GRPOTrainer calls it: prompts, completion_ids and every other dataset column as keyword arguments."""
    rows = {
        "prompts": [[{"role": "user", "content": "q"}]] * 3,
        "completions": [[{"role": "assistant", "content": f"Answer: {x}"}] for x in ("34", "35", "\\boxed{34}")],
        "completion_ids": [[1, 2]] * 3,
        "data_source": ["math_dapo"] * 3,
        "ability": ["MATH"] * 3,
        "reward_model": [{"ground_truth": "34", "style": "rule-lighteval/MATH_v2"}] * 3,
        "extra_info": [{"index": "a"}] * 3,
        "trainer_state": None,
        "log_extra": lambda *args: None,
        "log_metric": lambda *args: None,
    }
    assert math_accuracy(**rows) == [1.0, 0.0, 1.0]
    assert math_accuracy_signed(**rows) == [1.0, -1.0, 1.0]


def test_gold_column_precedence_and_errors():
    completions = ["Answer: 1"]
    assert math_accuracy(completions, solution=["2"], ground_truth=["1"]) == [1.0]
    assert math_accuracy(completions, solution=["2"], reward_model=[{"ground_truth": "1"}]) == [1.0]
    assert math_accuracy(completions, solution=["\\boxed{2}"], answer=["1"]) == [1.0]
    assert math_accuracy(completions, solution=["We find $x=\\boxed{1}$."]) == [1.0]
    assert math_accuracy(completions, reward_model=[{"style": "rule"}]) == [None]  # no ground_truth key
    assert math_accuracy(completions, ground_truth=[None]) == [None]
    with pytest.raises(ValueError, match="ground_truth"):
        math_accuracy(completions, prompts=["p"])
    with pytest.raises(ValueError, match="2 gold answers"):
        math_accuracy(completions, ground_truth=["1", "2"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 5", "5"),
        ("answer:   $\\frac{1}{2}$ .", "\\frac{1}{2}"),
        ("Answer: \\(x+1\\)", "x+1"),
        ("Answer: 3\nAnswer: 4", "4"),
        ("Answer: 3\nAnswer:", "3"),  # an empty last marker does not hide the previous one
        ("\\boxed{1} \\boxed{2}", "2"),
        ("\\boxed{\\frac{a}{\\{b\\}}}", "\\frac{a}{\\{b\\}}"),
        ("#### 72", "72"),
        ("The answer is 5", None),
        ("\\boxed{unclosed", None),
        (None, None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_pathological_answers_cannot_hang(monkeypatch):
    start = time.perf_counter()
    completions = ["Answer: 9^{9^{9^{9}}}", "Answer: (10^{100})!", "Answer: 2^{2^{30}}", "Answer: 5"]
    assert math_accuracy(completions, ground_truth=["5"] * 4, timeout_seconds=1.0) == [0.0, 0.0, 0.0, 1.0]
    assert time.perf_counter() - start < 20
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=math_accuracy(completions, ground_truth=["5"] * 4)))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and result["r"] == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_time_limit_interrupts_python_code_in_any_thread(in_thread):
    outcome = {}

    def spin():
        start = time.perf_counter()
        try:
            with _time_limit(0.2):
                while True:
                    pass
        except _VerifyTimeout:
            outcome["seconds"] = time.perf_counter() - start
        with _time_limit(0.2):  # finishes in time: nothing may surface afterwards
            sum(range(1000))
        time.sleep(0.4)
        outcome["clean"] = True

    if in_thread:
        worker = threading.Thread(target=spin)
        worker.start()
        worker.join(timeout=10)
    else:
        spin()
    assert outcome.get("clean") and 0.15 < outcome["seconds"] < 5


def test_timed_out_completion_is_wrong(monkeypatch):
    import dapo_trl.rewards as rewards

    real_grade = rewards._grade

    def slow_grade(gold, completion):
        if "slow" in completion:
            while True:
                pass
        return real_grade(gold, completion)

    monkeypatch.setattr(rewards, "_grade", slow_grade)
    assert math_accuracy(["Answer: 1 slow", "Answer: 1"], ground_truth=["1", "1"], timeout_seconds=0.3) == [0.0, 1.0]
