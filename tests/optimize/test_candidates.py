"""Candidate extraction from messy optimizer output, and the paper's hygiene filters."""

from __future__ import annotations

import pytest

from opro.optimize.candidates import MAX_CHARS, check, clean, extract, interleave


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[Solve the problem step by step.]", ["Solve the problem step by step."]),
        ("Sure! Here it is: [Work carefully.] Hope it helps.", ["Work carefully."]),
        ("[First idea.]\n[Second idea.]", ["First idea.", "Second idea."]),
        ("[Read it\ntwice.]", ["Read it\ntwice."]),
        ("[ ] then [Real one.]", ["Real one."]),
        ("Use [brackets [nested] oddly]", ["nested"]),
        ("", []),
        ("   \n  ", []),
    ],
)
def test_square_brackets(answer: str, expected: list[str]) -> None:
    assert extract(answer, "instruction-tuned") == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("<INS>Think it through.</INS>", ["Think it through."]),
        ("Here: <ins>lower case tags</ins>", ["lower case tags"]),
        ("<INS>One.</INS> and <INS>Two.</INS>", ["One.", "Two."]),
        ("<INS>Never closed, runs to the end.", ["Never closed, runs to the end."]),
        ("Opened before the answer.</INS> trailing", ["Opened before the answer."]),
        ("No tags at all.", ["No tags at all."]),
        ("<INS></INS>", ["<INS></INS>"]),  # empty tags fall through; hygiene rejects the rest
    ],
)
def test_gpt_tags(answer: str, expected: list[str]) -> None:
    assert extract(answer, "gpt") == expected


def test_gpt_answer_openers_use_start_tags_but_ins_is_accepted() -> None:
    assert extract("<Start>Let us see.</Start>", "gpt", tag="Start") == ["Let us see."]
    assert extract("<INS>Let us see.</INS>", "gpt", tag="Start") == ["Let us see."]


def test_pretrained_continuations() -> None:
    # A completion model continues the list: the first <TEXT> pair, then maybe more lines.
    answer = "\n\nPrecision: 81 <TEXT>Check each step.</TEXT>\n\nPrecision: 90 <TEXT>More.</TEXT>"
    assert extract(answer, "pretrained") == ["Check each step.", "More."]
    assert extract(" Verify the answer.</TEXT>\n\nPrecision:", "pretrained") == [
        " Verify the answer."
    ]
    assert extract("Precision: 77 <TEXT>Cut off mid", "pretrained") == ["Cut off mid"]


def test_the_asked_for_markup_wins_and_the_others_are_fallbacks() -> None:
    both = "[bracketed] <INS>tagged</INS>"
    assert extract(both, "instruction-tuned") == ["bracketed"]
    assert extract(both, "gpt") == ["tagged"]
    assert extract("<INS>tagged only</INS>", "instruction-tuned") == ["tagged only"]
    assert extract("[bracketed only]", "pretrained") == ["bracketed only"]


def test_plain_answers_lose_a_preamble_line() -> None:
    assert extract("Here is my new text:\nSolve it slowly.", "instruction-tuned") == [
        "Solve it slowly."
    ]
    assert extract("Just one line: no markup.", "instruction-tuned") == [
        "Just one line: no markup."
    ]


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("  solve it.  ", "Solve it."),
        ("**Solve** it.", "Solve it."),
        ('"quoted text."', "Quoted text."),
        ("\u201ccurly quotes\u201d", "Curly quotes"),
        ("spread\n  over   lines", "Spread over lines"),
    ],
)
def test_clean(raw: str, cleaned: str) -> None:
    assert clean(raw) == cleaned
    assert check(raw) == (cleaned, None)


@pytest.mark.parametrize(
    ("raw", "forbid_digits", "reason"),
    [
        ("", False, "empty"),
        ("  **  ", False, "empty"),
        ("a" * (MAX_CHARS + 1), False, f"longer than {MAX_CHARS} characters"),
        ("Replace <INS> with care.", False, 'contains "INS"'),
        ("Add the 2 numbers.", True, "contains a digit"),
        ("...", False, "has no letters"),
    ],
)
def test_rejections(raw: str, forbid_digits: bool, reason: str) -> None:
    assert check(raw, forbid_digits=forbid_digits)[1] == reason


def test_digits_are_fine_when_the_task_allows_them_and_500_is_the_limit() -> None:
    assert check("Add the 2 numbers.")[1] is None
    assert check("a" * MAX_CHARS)[1] is None


def test_interleave_takes_first_candidates_first() -> None:
    assert interleave([["a1", "a2", "a3"], [], ["c1"], ["d1", "d2"]]) == [
        (0, "a1"),
        (2, "c1"),
        (3, "d1"),
        (0, "a2"),
        (3, "d2"),
        (0, "a3"),
    ]
    assert interleave([]) == []
