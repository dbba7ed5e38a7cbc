"""The reference implementation's own grading cases, as our test data.

google-deepmind/opro tests its grader in `opro/evaluation/eval_utils_test.py`. Every accuracy
case there (`_get_accuracy` one prediction at a time, `get_accuracy_of_list` over several) is
written out below as a fact: target, prediction, question, and the result the reference
expects. Our strict grader agrees with all of them; the reference grader reproduces them
exactly, stage by stage and end to end.
"""

from __future__ import annotations

import pytest

from opro.tasks import grade
from opro.tasks.grading import parse_options
from opro.tasks.grading_reference import reference_accuracy

SUN = "From which direction does the sun rise in the morning? (A) west (B) east (C) north (D) south"
# Options listed inline, then the letters repeated on their own: "(A)(B)(C)(D)".
DUMMY = (
    "This is a (dummy) question. (A) west (B) east west (C) north (D) south\n"
    "What's the answer in (A)(B)(C)(D)?"
)
PUNCT = "This is a dummy (x) question: (A) a/b$ (B) b/c! (C) c/d (D) d/a"

# (case name in the reference's test, target, prediction, question, expected)
CASES = [
    ("symbol_without_brackets_correct", "(A)", "a", "", True),
    ("symbol_without_brackets_wrong", "(A)", "b", "", False),
    ("symbol_with_brackets_correct", "(A)", "(a)", "", True),
    ("symbol_with_brackets_wrong", "(A)", "(b)", "", False),
    ("text_match_correct", "(B)", "east", SUN, True),
    ("text_with_bracket_and_punc_match_correct", "(B)", "b/c! ", PUNCT, True),
    ("text_match_wrong", "(B)", "west", SUN, False),
    ("symbol_match_with_text_correct", "(B)", "b", SUN, True),
    ("symbol_match_with_text_wrong", "(B)", "a", SUN, False),
    ("symbol_match", "B", "(b)", DUMMY, True),
    ("answer_match_with_punctuations", "Yes", ":yes", "", True),
    ("boolean_match_on_text_1", "Yes", "yes", "", True),
    ("boolean_match_on_text_2", "True", "true", "", True),
    ("boolean_match_on_meaning_1", "Yes", "true", "", True),
    ("boolean_match_on_meaning_2", "Yes", "false", "", False),
    ("boolean_match_on_meaning_3", "Yes", "1", "", True),
    ("boolean_match_on_meaning_4", "Invalid", "true", "", False),
    ("boolean_match_on_meaning_5", "Invalid", "false", "", True),
    ("boolean_match_on_meaning_6", "Invalid", "1", "", False),
    ("symbol_not_match", "B", "(a)", DUMMY, False),
    ("text_exact_match", "B", "east west", DUMMY, True),
    ("text_exact_match_case_2", "A", "west", DUMMY, True),
    ("text_included", "B", "east west is reported", DUMMY, True),
    ("text_included_case_2", "A", "west is reported", DUMMY, True),
    ("text_included_with_punc_and_space_correct_1", "A", ": west", DUMMY, True),
    ("text_included_with_punc_and_space_correct_2", "A", ": west is reported", DUMMY, True),
    ("text_included_with_punc_and_space_not_correct", "A", ": east", DUMMY, False),
    ("text_not_included_case_1", "B", "west is reported", DUMMY, False),
    ("text_not_included_case_2", "A", "east west is reported", DUMMY, False),
]
# (case name, target, predictions, question, expected mean accuracy)
LIST_CASES = [
    ("list_without_text", "A", ["A", "A", "A", "B"], "", 0.75),
    ("list_with_text", "(B)", ["A", "east", "b", "(B)", "(D)"], SUN, 0.6),
]


@pytest.mark.parametrize(
    ("target", "prediction", "question", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_strict_grader_agrees_with_every_reference_case(
    target: str, prediction: str, question: str, expected: bool
) -> None:
    assert grade(prediction, target, question=question) is expected


@pytest.mark.parametrize(
    ("target", "predictions", "question", "expected"),
    [case[1:] for case in LIST_CASES],
    ids=[case[0] for case in LIST_CASES],
)
def test_strict_grader_agrees_with_the_reference_list_cases(
    target: str, predictions: list[str], question: str, expected: float
) -> None:
    graded = [grade(p, target, question=question) for p in predictions]
    assert sum(graded) / len(graded) == pytest.approx(expected)


def test_options_listed_inline_then_repeated_as_letters_keep_their_texts() -> None:
    # The repeated "(A)(B)(C)(D)" used to replace the options with empty texts.
    assert parse_options(DUMMY) == {"a": "west", "b": "east west", "c": "north", "d": "south"}
    assert grade("east west", "B", question=DUMMY)
    assert not grade("east west", "A", question=DUMMY)
    # A second list with texts of its own still replaces the first (e.g. a worked example).
    two = "Example: (A) red (B) blue\nNow: (A) cat (B) dog"
    assert parse_options(two) == {"a": "cat", "b": "dog"}


# The reference's evaluation calls `_get_accuracy` with treat_include_as_correct=True for every
# non-numeric task, which its unit tests leave off: through the whole pipeline the target letter
# "a" found inside "east" counts. These two cases therefore differ from the unit-test result.
PIPELINE_DIFFERS = {
    "text_included_with_punc_and_space_not_correct",
    "text_not_included_case_2",
}


@pytest.mark.parametrize(
    ("target", "prediction", "question", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_reference_accuracy_reproduces_every_reference_case(
    target: str, prediction: str, question: str, expected: bool
) -> None:
    assert reference_accuracy(target, prediction, question) is expected


@pytest.mark.parametrize(
    ("name", "target", "prediction", "question", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_reference_grader_end_to_end_on_every_reference_case(
    name: str, target: str, prediction: str, question: str, expected: bool
) -> None:
    wanted = not expected if name in PIPELINE_DIFFERS else expected
    assert grade(prediction, target, question=question, rules="reference") is wanted


@pytest.mark.parametrize(
    ("target", "predictions", "question", "expected"),
    [case[1:] for case in LIST_CASES],
    ids=[case[0] for case in LIST_CASES],
)
def test_reference_grader_reproduces_the_list_cases(
    target: str, predictions: list[str], question: str, expected: float
) -> None:
    direct = [reference_accuracy(target, p, question) for p in predictions]
    whole = [grade(p, target, question=question, rules="reference") for p in predictions]
    assert sum(direct) / len(direct) == pytest.approx(expected)
    assert sum(whole) / len(whole) == pytest.approx(expected)
