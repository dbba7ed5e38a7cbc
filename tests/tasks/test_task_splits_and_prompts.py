"""Splits (paper sizes, determinism, official test sets) and prompt rendering."""

from __future__ import annotations

import numpy as np
import pytest

from opro.tasks import Example, Task, render_prompt, split


def _task(n: int, *, test: int = 0, fraction: float = 0.2) -> Task:
    examples = tuple(Example(f"q{i}", str(i), id=str(i)) for i in range(n + test))
    return Task("t", examples, "number", fraction, test_start=n if test else None)


def test_split_sizes_round_down_like_the_paper() -> None:
    for n, expected in [(250, 50), (187, 37), (146, 29), (178, 35), (4, 0), (5, 1)]:
        parts = split(_task(n))
        assert len(parts.train) == expected
        assert len(parts.train) + len(parts.test) == n


def test_split_matches_numpy_legacy_choice() -> None:
    # The paper seeds the legacy generator and calls choice(n, size, replace=False).
    parts = split(_task(250), seed=0)
    expected = sorted(np.random.RandomState(0).choice(250, size=50, replace=False))
    assert [int(e.id) for e in parts.train] == [int(i) for i in expected]


def test_split_is_deterministic_and_disjoint() -> None:
    task = _task(100)
    a = split(task, train_fraction=0.3, validation_fraction=0.2, seed=5)
    assert a == split(task, train_fraction=0.3, validation_fraction=0.2, seed=5)
    assert a != split(task, train_fraction=0.3, validation_fraction=0.2, seed=6)
    ids = [{e.id for e in part} for part in (a.train, a.validation, a.test)]
    assert [len(s) for s in ids] == [30, 20, 50]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    assert [int(e.id) for e in a.test] == sorted(int(e.id) for e in a.test)


def test_split_with_an_official_test_set() -> None:
    task = _task(200, test=30, fraction=0.035)
    parts = split(task)
    assert len(parts.train) == 7 and parts.test == task.examples[200:]
    assert all(int(e.id) < 200 for e in parts.train)
    full = split(task, train_fraction=1.0)
    assert len(full.train) == 200 and len(full.test) == 30


@pytest.mark.parametrize(("train", "validation"), [(-0.1, 0.0), (1.1, 0.0), (0.6, 0.5)])
def test_split_rejects_bad_fractions(train: float, validation: float) -> None:
    with pytest.raises(ValueError):
        split(_task(10), train_fraction=train, validation_fraction=validation)


QUESTION = "How many legs does a cat have?"


@pytest.mark.parametrize(
    ("position", "framing", "expected"),
    [
        ("Q_begin", True, "Q: Think.\nHow many legs does a cat have?\n\nA:"),
        ("Q_end", True, "Q: How many legs does a cat have?\nThink.\n\nA:"),
        ("A_begin", True, "Q: How many legs does a cat have?\n\nA: Think."),
        ("before_Q", True, "Think.\nQ: How many legs does a cat have?\n\nA:"),
        ("Q_begin", False, "Think.\nHow many legs does a cat have?"),
        ("Q_end", False, "How many legs does a cat have?\nThink."),
    ],
)
def test_render_prompt_positions(position: str, framing: bool, expected: str) -> None:
    assert render_prompt("Think.", QUESTION, position, qa_framing=framing) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("position", ["Q_begin", "Q_end", "A_begin", "before_Q"])
@pytest.mark.parametrize("instruction", ["", "   "])
def test_empty_instruction_is_the_bare_question(position: str, instruction: str) -> None:
    # The paper's gen_prompt gives "Q: {q}\n\nA:" for every position when there is no instruction.
    prompt = render_prompt(instruction, QUESTION, position, qa_framing=True)  # type: ignore[arg-type]
    assert prompt == f"Q: {QUESTION}\n\nA:"


def test_empty_instruction_without_framing() -> None:
    assert render_prompt("", QUESTION, "Q_begin", qa_framing=False) == QUESTION
    assert render_prompt("", QUESTION, "Q_end", qa_framing=False) == QUESTION


def test_framing_defaults_to_off_unless_the_position_needs_it() -> None:
    # The paper's code has no Q:/A: framing by default for either of its scorers.
    assert render_prompt("Think.", QUESTION, "Q_begin") == f"Think.\n{QUESTION}"
    assert render_prompt("Think.", QUESTION, "Q_end") == f"{QUESTION}\nThink."
    assert render_prompt("Think.", QUESTION, "A_begin") == f"Q: {QUESTION}\n\nA: Think."
    assert render_prompt("Think.", QUESTION, "before_Q") == f"Think.\nQ: {QUESTION}\n\nA:"


@pytest.mark.parametrize("position", ["A_begin", "before_Q"])
def test_positions_that_need_framing(position: str) -> None:
    with pytest.raises(ValueError):
        render_prompt("Think.", QUESTION, position, qa_framing=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render_prompt("Think.", QUESTION, "middle")  # type: ignore[arg-type]
