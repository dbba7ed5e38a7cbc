"""Every file of the paper's data release loads, with the right counts and split sizes.

The data directory is $OPRO_DATA_DIR, else ../shared/data beside the repository (where CI puts
it). A missing directory fails these tests: skipping would hide that the data was never checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opro.tasks import Task, grade, list_tasks, load_task, split
from opro.tasks.datasets import BBH_TASKS
from opro.tasks.synthetic import (
    evaluate_arithmetic,
    evaluate_boolean,
    tokenize_arithmetic,
    tokenize_boolean,
)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DATA_DIR = Path(os.environ.get("OPRO_DATA_DIR") or DEFAULT_DATA_DIR)

BBH_COUNTS = {name: 250 for name in BBH_TASKS} | {
    "causal_judgement": 187,
    "penguins_in_a_table": 146,
    "snarks": 178,
}
MULTIPLE_CHOICE = {
    "date_understanding", "disambiguation_qa", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection",
    "snarks", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
}  # fmt: skip
ANSWER_TYPES = {
    "boolean_expressions": "boolean",
    "causal_judgement": "yes_no",
    "formal_fallacies": "valid_invalid",
    "navigate": "yes_no",
    "sports_understanding": "yes_no",
    "web_of_lies": "yes_no",
    "object_counting": "number",
    "multistep_arithmetic_two": "number",
    "dyck_languages": "free",
    "word_sorting": "free",
} | dict.fromkeys(MULTIPLE_CHOICE, "choice")


def _data_dir() -> Path:
    """The data directory; a missing one fails the calling test (a failure, not an error)."""
    assert DATA_DIR.is_dir(), (
        f"data directory {DATA_DIR} is missing: set OPRO_DATA_DIR to the OPRO data release "
        "(gsm_data/, BIG-Bench-Hard-data/, MultiArith-data/, AQuA-data/)"
    )
    return DATA_DIR


def _load(name: str) -> Task:
    return load_task(name, data_dir=_data_dir())


@pytest.mark.parametrize("name", sorted(BBH_COUNTS))
def test_bbh_task(name: str) -> None:
    task = _load(f"bbh/{name}")
    n = BBH_COUNTS[name]
    assert len(task) == n
    assert task.answer_type == ANSWER_TYPES[name]
    assert task.is_multiple_choice == (name in MULTIPLE_CHOICE)
    parts = split(task)
    assert len(parts.train) == int(0.2 * n)  # 50 of 250, 37 of 187, 29 of 146, 35 of 178
    assert len(parts.validation) == 0
    assert len(parts.test) == n - int(0.2 * n)
    assert {e.id for e in parts.train}.isdisjoint(e.id for e in parts.test)
    # The reference answer itself, written as a model would, is graded correct.
    for example in task.examples:
        assert grade(f"The answer is {example.target}.", example.target, question=example.input)


def test_bbh_split_sizes_by_hand() -> None:
    sizes = {
        name: len(split(_load(f"bbh/{name}")).train)
        for name in ("causal_judgement", "penguins_in_a_table", "snarks", "navigate")
    }
    assert sizes == {
        "causal_judgement": 37,
        "penguins_in_a_table": 29,
        "snarks": 35,
        "navigate": 50,
    }


def test_gsm8k() -> None:
    task = _load("gsm8k")
    assert len(task) == 7473 + 1319
    assert task.test_start == 7473
    assert len(task.pool) == 7473 and len(task.official_test) == 1319
    assert task.answer_type == "number" and not task.is_multiple_choice
    assert task.examples[0].target == "72"
    assert task.examples[0].input.startswith("Natalia sold clips")
    parts = split(task)
    assert len(parts.train) == 261  # int(0.035 * 7473), seed 0, as in the paper
    assert parts.test == task.official_test
    assert all(e.id.startswith("train/") for e in parts.train)
    with_validation = split(task, validation_fraction=0.01)
    assert len(with_validation.validation) == 74
    assert with_validation.train == parts.train


def test_multiarith() -> None:
    task = _load("multiarith")
    assert len(task) == 600
    assert task.answer_type == "number"
    assert task.examples[0].target == "39"
    assert not task.examples[0].input.startswith(" ")
    parts = split(task)
    assert (len(parts.train), len(parts.test)) == (0, 600)  # test-only in the paper
    assert len(split(task, train_fraction=0.2).train) == 120


def test_aqua() -> None:
    task = _load("aqua")
    assert len(task) == 254
    assert task.answer_type == "choice" and task.is_multiple_choice
    first = task.examples[0]
    lines = first.input.split("\n")
    assert lines[-1] == "What's the answer in (A) (B) (C) (D) (E)?"
    assert lines[-6].startswith("(A)") and lines[-2].startswith("(E)")
    assert len(first.choices) == 5
    parts = split(task)
    assert (len(parts.train), len(parts.test)) == (0, 254)
    for example in task.examples:
        assert grade(f"The answer is ({example.target}).", example.target, question=example.input)


def test_boolean_evaluator_agrees_with_bbh() -> None:
    for example in _load("bbh/boolean_expressions").examples:
        assert str(evaluate_boolean(tokenize_boolean(example.input))) == example.target


def test_arithmetic_evaluator_agrees_with_bbh() -> None:
    for example in _load("bbh/multistep_arithmetic_two").examples:
        assert str(evaluate_arithmetic(tokenize_arithmetic(example.input))) == example.target


def test_list_tasks_counts_all_thirty_files() -> None:
    infos = {info.name: info for info in list_tasks(_data_dir())}
    assert len([n for n in infos if not n.startswith("synthetic/")]) == 30
    assert infos["gsm8k"].count == 8792
    assert infos["bbh/snarks"].count == 178
    assert infos["aqua"].answer_type == "choice"
    assert infos["synthetic/arithmetic"].count == 200
