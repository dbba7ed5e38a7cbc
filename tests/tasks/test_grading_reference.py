"""The reference grader's own behaviour, quirks included, and where the strict grader differs.

`DIFFERENCES` is the table in the README ("Strict and reference grading"): each row is held to
both graders' results here.
"""

from __future__ import annotations

import pytest

from opro.engine.engine import TaskGrader
from opro.tasks import GRADING_VERSION, Example, grade, grading_version
from opro.tasks.grading_reference import (
    REFERENCE_GRADING_VERSION,
    first_line,
    normalize_prediction,
    reference_kind,
)

SUN = "Which way does the sun rise?\nOptions:\n(A) west\n(B) east\n(C) north\n(D) south"
AQUA = (
    "A train covers 60 km in 1.5 hours. What is its speed?\n(A)30 km/h\n(B)40 km/h\n"
    "(C)45 km/h\n(D)50 km/h\n(E)None of these\nWhat's the answer in (A) (B) (C) (D) (E)?"
)

# (prediction, target, question, strict, reference)
DIFFERENCES = [
    ("The answer is seventy-two.", "72", "", True, False),  # "seventy" -> "7ty": reads 2
    ("The answer is none.", "1", "", False, True),  # "none" -> "n1": reads 1
    ("The answer is 3.14159", "3.14", "", True, False),  # rounded to 0 decimals: "3"
    ("Answer: 42", "42", "", True, False),  # "answer: " is matched case-sensitively
    ("The argument is invalid.", "valid", "", False, True),  # "valid" is in "invalid"
    ("I cannot tell.", "No", "", False, True),  # "no" is in "cannot"
    ("} ]", "] ]", "", False, True),  # punctuation is removed before comparing
    ("", "] ]", "", False, True),  # ... so even no answer matches a dyck target
    ("apple banana cherry date", "apple banana cherry", "", False, True),  # target inside
    ("Either (A) or (B).", "(B)", SUN, False, True),  # "(b)" is in the answer
    ("It is about 45 km/h", "B", AQUA, False, True),  # the letter "b" is in "about"
]
AGREE = [
    ("The answer is (B) east.", "(B)", SUN, True),
    ("The answer is (A).", "(B)", SUN, False),
    ("The answer is 72", "72", "", True),
    ("Natalia sold 48 + 24 = 72 clips.", "72", "", True),
    ("The answer is 73", "72", "", False),
    ("The answer is: Yes.", "Yes", "", True),
    ("0", "False", "", True),
    ("The answer is (C).", "C", AQUA, True),
]


@pytest.mark.parametrize(("prediction", "target", "question", "strict", "reference"), DIFFERENCES)
def test_documented_differences(
    prediction: str, target: str, question: str, strict: bool, reference: bool
) -> None:
    assert grade(prediction, target, question=question) is strict
    assert grade(prediction, target, question=question, rules="reference") is reference


@pytest.mark.parametrize(("prediction", "target", "question", "expected"), AGREE)
def test_both_graders_agree_on_plain_answers(
    prediction: str, target: str, question: str, expected: bool
) -> None:
    assert grade(prediction, target, question=question) is expected
    assert grade(prediction, target, question=question, rules="reference") is expected


@pytest.mark.parametrize(
    ("prediction", "as_number", "as_text"),
    [
        ("The answer is (B) east.", "(b)", "(b)"),  # one bracketed letter: just "(b)"
        ("I saw (dummy) and (b)", "(dummy)", "(dummy)"),  # ... the first parentheses, though
        ("answer: 156kgs", "156", "156kgs"),
        ("Answer: 156kgs", "", "answer: 156kgs"),
        ("so 5 + 3 = 8 apples", "8", "so 5 + 3 = 8 apples"),
        ("The answer is 5  apples", "5", "5  apples"),
        ("The answer is seventy-two.", "2", "seventy-two"),
        ("12\n34 is wrong", "12", "12\n34 is wrong"),
        ("The answer is $1,234.", "1234", "$1,234"),
        ("It is 7. Q: next one is 9", "7", "it is 7"),
        ("The answer is 4.5", "4", "4"),  # rounded half to even, to 0 decimals
        ("7 is the answer. This is the solution: 7 = 3 + 4", "7", "7"),
    ],
)
def test_normalize_prediction(prediction: str, as_number: str, as_text: str) -> None:
    assert normalize_prediction(prediction, treat_as_number=True) == as_number
    assert normalize_prediction(prediction, treat_as_number=False) == as_text


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [("0", "false"), ("1.", "true"), ("The answer is: Yes.", "yes"), ("Yes, it is.", "yes, it is")],
)
def test_normalize_prediction_for_booleans(prediction: str, expected: str) -> None:
    text = normalize_prediction(prediction, treat_as_number=False, treat_as_bool=True)
    assert text == expected.replace(",", "")


def test_first_line_is_what_gets_graded() -> None:
    assert first_line(": (b)\nbecause") == "(b)"
    assert first_line("7 Q: 8") == "7 "


@pytest.mark.parametrize(
    ("target", "question", "kind"),
    [
        ("72", "", "number"),
        ("-50", "", "number"),
        ("Yes", "", "boolean"),
        ("invalid", "", "boolean"),
        ("(B)", SUN, "choice"),
        ("C", AQUA, "choice"),
        ("(B)", "", "free"),
        ("] ]", "", "free"),
    ],
)
def test_reference_kind_follows_the_papers_task_switches(
    target: str, question: str, kind: str
) -> None:
    assert reference_kind(target, question) == kind


def test_a_missing_option_is_wrong_not_a_crash() -> None:
    # The reference raises IndexError for a letter beyond the listed options.
    assert grade("(F)", "(F)", question=SUN, rules="reference") is False


def test_graders_are_versioned_separately() -> None:
    assert grading_version("strict") == GRADING_VERSION == TaskGrader().version
    assert grading_version("reference") == REFERENCE_GRADING_VERSION
    assert TaskGrader("reference").version == REFERENCE_GRADING_VERSION
    assert len({GRADING_VERSION, REFERENCE_GRADING_VERSION}) == 2
    example = Example("Is 3 even?", "No")
    assert TaskGrader("reference")("I cannot tell.", example) is True
    assert TaskGrader()("I cannot tell.", example) is False


def test_unknown_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="strict, reference"):
        grade("7", "7", rules="lenient")  # type: ignore[arg-type]
