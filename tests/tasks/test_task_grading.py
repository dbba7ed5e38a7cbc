"""Grading of realistic scorer outputs, one table per answer type."""

from __future__ import annotations

import pytest

from opro.tasks import GRADING_VERSION, answer_type, grade
from opro.tasks.grading import (
    cut_next_question,
    extract_answer,
    extract_boolean,
    extract_choice_letter,
    extract_number,
    options_mentioned,
    parse_options,
)

SUN = "From which direction does the sun rise?\nOptions:\n(A) west\n(B) east\n(C) north\n(D) south"
NESTED = "Where is the shop?\nOptions:\n(A) north east\n(B) east\n(C) west"
AQUA = (
    "A train covers 60 km in 1.5 hours. What is its speed?\n(A)30 km/h\n(B)40 km/h\n"
    "(C)45 km/h\n(D)50 km/h\n(E)None of these\nWhat's the answer in (A) (B) (C) (D) (E)?"
)

NUMBER_CASES = [
    ("72", "72", True),
    ("The answer is 72.", "72", True),
    ("Natalia sold 48 + 24 = 72 clips. The answer is 72", "72", True),
    ("She sold 48/2 = 24 in May, so 48 + 24 = 72 altogether.", "72", True),
    ("The answer is 18.\n\nQ: Tom has 5 apples. How many?\nA: 5", "18", True),
    ("18\nQ: next question 99", "18", True),
    ("The answer is 5 + 13 = 18", "18", True),
    ("The answer is $1,234.00.", "1234", True),
    ("She earns $1,234.00 in total.", "1234", True),
    ("It costs 1,234 dollars", "1234", True),
    ("The answer is 50%.", "50", True),
    ("The answer is twelve.", "12", True),
    ("The answer is twenty-five", "25", True),
    ("Twenty five apples", "25", True),
    ("The answer is -3.", "-3", True),
    ("The answer is -3.", "3", False),
    ("((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) = 46 - 22 = 24", "24", True),
    ("The answer is -11520", "-11520", True),
    ("The answer is 3.14159", "3.14", True),
    ("The answer is 3.15", "3.14", False),
    ("The answer is 0.5", "0.5", True),
    ("The answer is .5", "0.5", True),
    ("The answer is 72.4", "72", True),  # rounded to the target's decimals, as in the paper
    ("The answer is 73", "72", False),
    ("18 is the answer.", "18", True),
    ("So 7 + 11 = 18 is the final answer", "18", True),
    ("Answer: 156kgs", "156", True),
    ("**Answer:** 42", "42", True),
    ("The final result is \\boxed{42}.", "42", True),
    ("He has 3 boxes with 4 pens each, so 12 pens.", "12", True),
    ("He has 3 boxes with 4 pens each, so 12 pens.", "4", False),
    ("I cannot tell.", "5", False),
    ("", "5", False),
    ("The answer is 39", "39.0", True),
    ("#### 72", "72", True),
    ("The answer is 72", "#### 72", True),
    ("The answer is 2 apples and 3 pears", "2", True),
    ("The answer is unclear but 5 fits.", "5", True),
    ("10-12 people came; the answer is 12", "12", True),
]


@pytest.mark.parametrize(("output", "target", "expected"), NUMBER_CASES)
def test_number_targets(output: str, target: str, expected: bool) -> None:
    assert grade(output, target) is expected


BOOLEAN_CASES = [
    ("False", "False", True),
    ("false", "False", True),
    ("The answer is False.", "False", True),
    ("The answer is True.", "False", False),
    ("0", "False", True),
    ("1", "False", False),
    ("1", "True", True),
    ("The answer is 0.", "False", True),
    ("not ( True ) is False, so the answer is False", "False", True),
    ("Yes.", "yes", True),
    ("yes", "Yes", True),
    ("YES", "Yes", True),
    ("No.", "Yes", False),
    ("No, the player does not play that sport.", "no", True),
    ("Let's think. Sherrie tells the truth. So Elanor lies. The answer is No.", "No", True),
    ("Yes\n\nQ: Does Bob tell the truth?\nA: No", "Yes", True),
    ("True", "Yes", True),  # the paper maps true/false and 0/1 onto yes/no too
    ("1", "Yes", True),
    ("0", "No", True),
    ("Elanor lies. Therefore, no.", "No", True),
    ("The player is a hockey player, so the sentence is plausible: yes", "yes", True),
    ("valid", "valid", True),
    ("invalid", "valid", False),
    ("The argument is invalid.", "invalid", True),
    ("The answer is: invalid", "valid", False),
    ("The answer is: valid", "invalid", False),
    ("1", "valid", True),
    ("0", "invalid", True),
    ("I am not sure.", "Yes", False),
    ("", "False", False),
]


@pytest.mark.parametrize(("output", "target", "expected"), BOOLEAN_CASES)
def test_boolean_targets(output: str, target: str, expected: bool) -> None:
    assert grade(output, target) is expected


CHOICE_CASES = [
    ("(B)", "(B)", SUN, True),
    ("(b)", "(B)", SUN, True),
    ("B", "(B)", SUN, True),
    ("b.", "(B)", SUN, True),
    ("The answer is (B) east.", "(B)", SUN, True),
    ("The answer is (B).", "(B)", SUN, True),
    ("The answer is B.", "(B)", SUN, True),
    ("The answer is (A).", "(B)", SUN, False),
    ("(A) west", "(B)", SUN, False),
    ("B) east", "(B)", SUN, True),
    ("east", "(B)", SUN, True),
    ("East.", "(B)", SUN, True),
    ("The sun rises in the east.", "(B)", SUN, True),
    ("The sun rises in the east, not the west.", "(B)", SUN, False),
    ("west", "(B)", SUN, False),
    ("Either (A) or (B).", "(B)", SUN, False),
    ("The answer is (B)\n\nQ: Which way is down?\nA: (C)", "(B)", SUN, True),
    # An option text that contains another option's text.
    ("north east", "(B)", NESTED, False),
    ("north east", "(A)", NESTED, True),
    ("It is to the east.", "(B)", NESTED, True),
    ("It is to the north east.", "(A)", NESTED, True),
    ("north east or east", "(A)", NESTED, False),
    # Letter targets without brackets (AQuA) and AQuA-style options.
    ("The answer is (C).", "C", AQUA, True),
    ("C", "C", AQUA, True),
    ("c) 45 km/h", "C", AQUA, True),
    ("The speed is 45 km/h", "C", AQUA, True),  # the correct option's text and no other
    ("The answer is 40 km/h", "C", AQUA, False),
    ("The answer is (D).", "C", AQUA, False),
    # Without options, only the letter counts.
    ("The answer is (B)", "(B)", "", True),
    ("east", "(B)", "", False),
]


@pytest.mark.parametrize(("output", "target", "question", "expected"), CHOICE_CASES)
def test_choice_targets(output: str, target: str, question: str, expected: bool) -> None:
    assert grade(output, target, question=question) is expected


FREE_CASES = [
    ("] ]", "] ]", True),
    ("]]", "] ]", True),
    ("The answer is ] ] >", "] ] >", True),
    ("] ) >", "] ] >", False),
    ("apple banana cherry", "apple banana cherry", True),
    ("Apple banana cherry.", "apple banana cherry", True),
    ("apple, banana, cherry", "apple banana cherry", True),
    ("The sorted list is: apple banana cherry", "apple banana cherry", True),
    ("Sorted:\nbanana apple cherry", "apple banana cherry", False),
    ("Let me sort them.\napple banana cherry", "apple banana cherry", True),
    ("apple  banana\ncherry", "apple banana cherry", True),
    ("apple banana", "apple banana cherry", False),
    ("Monsters, Inc", "Monsters, Inc", True),
]


@pytest.mark.parametrize(("output", "target", "expected"), FREE_CASES)
def test_free_targets(output: str, target: str, expected: bool) -> None:
    assert grade(output, target) is expected


def test_option_text_target_is_a_choice() -> None:
    question = "Find a movie similar to Toy Story:\nOptions:\n(A) Heat\n(B) Monsters, Inc\n"
    assert answer_type("Monsters, Inc", question) == "choice"
    assert grade("(B)", "Monsters, Inc", question=question)
    assert grade("Monsters, Inc.", "Monsters, Inc", question=question)
    assert not grade("(A)", "Monsters, Inc", question=question)


@pytest.mark.parametrize(
    ("target", "question", "kind"),
    [
        ("72", "", "number"),
        ("-50", "", "number"),
        ("1,234", "", "number"),
        ("3.5", "", "number"),
        ("#### 18", "", "number"),
        ("(B)", SUN, "choice"),
        ("(B)", "", "choice"),
        ("C", "", "choice"),
        ("True", "", "boolean"),
        ("false", "", "boolean"),
        ("Yes", "", "yes_no"),
        ("no", "", "yes_no"),
        ("valid", "", "valid_invalid"),
        ("invalid", "", "valid_invalid"),
        ("] ] >", "", "free"),
        ("apple banana", "", "free"),
        ("east", SUN, "choice"),
        ("east", "", "free"),
    ],
)
def test_answer_type(target: str, question: str, kind: str) -> None:
    assert answer_type(target, question) == kind


def test_parse_options_bbh_aqua_and_inline() -> None:
    assert parse_options(SUN) == {"a": "west", "b": "east", "c": "north", "d": "south"}
    assert parse_options("Q?\nA)5(√3 + 1)\nB)6\nC)None of these")["a"] == "5(√3 + 1)"
    assert parse_options(AQUA)["c"] == "45 km/h"
    inline = "From which direction does the sun rise? (A) west (B) east (C) north (D) south"
    assert parse_options(inline)["b"] == "east"
    assert parse_options("Compute (B) only") == {}
    assert parse_options("") == {}


def test_options_mentioned_ignores_nested_occurrences() -> None:
    options = parse_options(NESTED)
    assert options_mentioned("north east", options) == {"a"}
    assert options_mentioned("east", options) == {"b"}
    assert options_mentioned("feast", options) == set()


def test_extraction_helpers() -> None:
    assert cut_next_question("42\nQ: and then?") == "42"
    assert cut_next_question("Q: echo of the question\nA: 5") == "Q: echo of the question\nA: 5"
    assert cut_next_question("We went to Iraq: 5") == "We went to Iraq: 5"
    found = extract_answer("First the answer is 3. Wait, the answer is 4.")
    assert (found.text, found.marker) == ("4", "behind")  # the last marker wins, as in the paper
    assert extract_answer("So (C) is the correct answer.").marker == "ahead"
    assert extract_number("no digits here") is None
    assert extract_number("The answer is: 7 apples") == 7.0
    assert extract_choice_letter("The answer is (D)") == "d"
    assert extract_choice_letter("(A) or (B)") is None
    assert extract_boolean("The answer is valid.", "valid_invalid") is True
    assert extract_boolean("nothing", "yes_no") is None


def test_model_output_is_never_evaluated() -> None:
    hostile = "__import__('os').system('exit 1') The answer is (A)"
    assert grade(hostile, "(A)") is True
    assert grade("1+1", "2") is False  # no arithmetic on the output: the last number is 1


def test_grading_version_is_a_nonempty_string() -> None:
    assert isinstance(GRADING_VERSION, str) and GRADING_VERSION
