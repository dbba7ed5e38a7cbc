"""The fast answer-extraction scans find exactly what the plain patterns find.

Grading runs on every answer, so `extract_answer` looks for its markers only where their
first word occurs, splits the next-question pattern in two halves that each start with a
literal, and finds option texts with `str.find` instead of a pattern compiled per option.
These tests compare each with the plain pattern it replaces, written out here, on many
random texts built from the pieces those patterns care about.
"""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from opro.tasks.grading import (
    _PRIMARY_MARKER_RE,
    _PRIMARY_STARTS,
    _SECONDARY_MARKER_RE,
    _SECONDARY_STARTS,
    _last_match,
    _spans,
    cut_next_question,
    extract_answer,
)
from opro.tasks.grading_reference import (
    first_line,
    grade_reference,
    normalize_prediction,
    reference_accuracy,
)

PLAIN_NEXT_QUESTION = re.compile(r"(?<![a-z0-9])q:|^\s*question:", re.MULTILINE)
PIECES = [
    "answer", "Answer", "is", "are", " is", "the", " ", "  ", "\n", "\t", ":", " :", "q", "Q",
    "q:", "Question", "question:", "####", "#", "a", "x", "é", "1", "(b)", ".", "**", "correct",
    "\\boxed{", "}", "final", "right", " is the answer", " is the correct answer", "\\boxed{7}",
]  # fmt: skip


def texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(PIECES, k=rng.randint(0, 14))) for _ in range(count)]


def plain_cut(output: str) -> str:
    stripped = output.strip()
    match = PLAIN_NEXT_QUESTION.search(stripped.lower(), 1)
    return stripped[: match.start()].rstrip() if match else stripped


@pytest.mark.parametrize("seed", range(4))
def test_next_question_cut_matches_the_plain_pattern(seed: int) -> None:
    for text in texts(seed, 5000):
        assert cut_next_question(text) == plain_cut(text), text


@pytest.mark.parametrize("seed", range(4))
def test_last_marker_matches_a_full_scan(seed: int) -> None:
    for text in texts(100 + seed, 5000):
        lowered = text.lower()
        for pattern, starts in (
            (_PRIMARY_MARKER_RE, _PRIMARY_STARTS),
            (_SECONDARY_MARKER_RE, _SECONDARY_STARTS),
        ):
            every = list(pattern.finditer(lowered))
            last = _last_match(pattern, lowered, starts)
            expected = every[-1].span() if every else None
            assert (last.span() if last else None) == expected, lowered


@pytest.mark.parametrize("seed", range(4))
def test_option_spans_match_the_word_bounded_pattern(seed: int) -> None:
    rng = random.Random(200 + seed)
    letters = ["a", "b", " ", "_", "é", "ß", "中", "²", "\u0661", "-", ".", "(", "1", "\n"]
    for _ in range(3000):
        text = "".join(rng.choices(letters, k=rng.randint(0, 16)))
        phrase = "".join(rng.choices(letters, k=rng.randint(1, 3)))
        pattern = re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)")
        assert _spans(text, phrase) == [m.span() for m in pattern.finditer(text)], (text, phrase)


def test_extraction_on_random_texts_is_unchanged() -> None:
    """`extract_answer` on random texts: a digest of what the code before the fast scans
    extracted (text, marker and full text of each)."""
    found = [extract_answer(text) for text in texts(7, 4000)]
    summary = "\x00".join(f"{e.text}\x01{e.marker}\x01{e.full}" for e in found)
    assert hashlib.sha256(summary.encode()).hexdigest() == EXTRACTED


EXTRACTED = "8b8deb9b1ed87e6d24605c729dd5c8334bfde641ea5c7b961adb4b289389749d"


# The reference rules' delimiters (every language), markers and quirks, for random outputs.
REFERENCE_PIECES = [
    "প্রশ্ন:",
    "frage:",
    "Question:",
    "pregunta:",
    "question :",
    "問題\uff1a",
    "задача:",
    "swali:",
    "ప్రశ్న:",
    "โจทย์:",
    "问题\uff1a",
    "Q:",
    "q:",
    "ধাপে ধাপে উত্তর: ",
    "Schritt-für-Schritt-Antwort: ",
    "Step-by-step answer: ",
    "respuesta paso a paso: ",
    "réponse étape par étape : ",
    "ステップごとの答え\uff1a",
    "пошаговое решение: ",
    "jibu la hatua kwa hatua: ",
    "దశలవారీగా సమాధానం: ",
    "คำตอบทีละขั้นตอน: ",
    "逐步解答\uff1a",
    "#### ",
    "answer is ",
    "Answer is ",
    "answer: ",
    "answer is: ",
    "is: ",
    "are: ",
    " is the answer",
    " is the correct answer",
    "this is the solution:",
    "(a)",
    "(B)",
    "(c)",
    ".",
    "'",
    "7",
    "42",
    "3.5",
    "seventy",
    "one",
    "=",
    "$",
    ",",
    "\u212a",
    "é",
    "\n",
    " ",
    "true",
    "yes",
    "no",
    "0",
    "1",
    "west",
    "east",
]
REFERENCE_QUESTION = "Which way? (A) west (B) east (C) north"


def test_reference_normalisation_on_random_texts_is_unchanged() -> None:
    """The reference rules skip delimiters that cannot occur and prepare targets once; a
    digest of what the code before that gave on random texts pins that nothing changed."""
    rng = random.Random(11)
    found = []
    for _ in range(3000):
        text = "".join(rng.choices(REFERENCE_PIECES, k=rng.randint(0, 10)))
        for number, boolean in ((False, False), (True, False), (False, True)):
            found.append(normalize_prediction(text, treat_as_number=number, treat_as_bool=boolean))
        found.append(first_line(text))
        for target, question in (
            ("(B)", REFERENCE_QUESTION),
            ("Yes", ""),
            ("72", ""),
            ("east", REFERENCE_QUESTION),
            ("valid", ""),
        ):
            found.append(
                str(reference_accuracy(target, text, question, treat_include_as_correct=True))
            )
            found.append(str(grade_reference(text, target, question=question)))
    digest = hashlib.sha256("\x00".join(found).encode()).hexdigest()
    assert digest == "a00575442b9ad556d1284442e935ae5e244669fbfe78bd4e61f3d7c106431acc"
