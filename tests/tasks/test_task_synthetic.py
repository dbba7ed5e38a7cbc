"""Generated tasks: reproducible for a seed, and their targets right on hand-checked cases."""

from __future__ import annotations

import pytest

from opro.tasks import grade, load_task, split
from opro.tasks.synthetic import (
    arithmetic_examples,
    boolean_expression_examples,
    evaluate_arithmetic,
    evaluate_boolean,
    tokenize_arithmetic,
    tokenize_boolean,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("True is", True),
        ("not True is", False),
        ("not not not False is", True),
        ("True or False and False is", True),  # and binds tighter than or
        ("( True or False ) and False is", False),
        ("not True or True is", True),  # not binds tighter than or
        ("not ( True or True ) is", False),
        ("False or not False and True and False is", False),
        ("True and not not ( not False ) is", True),
        ("not ( True ) and ( True ) is", False),
        ("((True))", True),
    ],
)
def test_boolean_evaluator(text: str, value: bool) -> None:
    assert evaluate_boolean(tokenize_boolean(text)) is value


@pytest.mark.parametrize(
    "text", ["True and", "( True", "True )", "not", "True False", "maybe", "__import__('os')", ""]
)
def test_boolean_evaluator_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        evaluate_boolean(tokenize_boolean(text))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-4 * -7", 28),
        ("8 - -6 * -3 * 1", -10),
        ("2 - 3 - 4", -5),  # left-associative
        ("((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =", 24),
        ("((6 * -6 * 8 * 1) * (-1 * 7 * -6 + -2)) =", -11520),
        ("- (2 + 3)", -5),
    ],
)
def test_arithmetic_evaluator(text: str, value: int) -> None:
    assert evaluate_arithmetic(tokenize_arithmetic(text)) == value


@pytest.mark.parametrize("text", ["1 +", "(1 + 2", "1 2", "2 / 1", "x", "1 + 2)", ""])
def test_arithmetic_evaluator_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        evaluate_arithmetic(tokenize_arithmetic(text))


def test_boolean_examples_are_reproducible_and_bbh_shaped() -> None:
    first = boolean_expression_examples(50, seed=3)
    assert first == boolean_expression_examples(50, seed=3)
    assert first != boolean_expression_examples(50, seed=4)
    for example in first:
        tokens = example.input.split()
        assert len(tokens) == 9 and tokens[-1] == "is"
        assert example.target in ("True", "False")
        assert example.target == str(evaluate_boolean(tokens[:-1]))
    assert {e.target for e in first} == {"True", "False"}
    assert all(len(e.input.split()) == 6 for e in boolean_expression_examples(5, num_tokens=5))


def test_arithmetic_examples_are_reproducible_and_bbh_shaped() -> None:
    first = arithmetic_examples(50, seed=1)
    assert first == arithmetic_examples(50, seed=1)
    assert first != arithmetic_examples(50, seed=2)
    for example in first:
        assert example.input.startswith("((") and example.input.endswith(") =")
        assert int(example.target) == evaluate_arithmetic(tokenize_arithmetic(example.input))
    assert len(tokenize_arithmetic(arithmetic_examples(1, operands=2)[0].input)) < len(
        tokenize_arithmetic(first[0].input)
    )


def test_synthetic_tasks_by_name() -> None:
    task = load_task("synthetic/boolean_expressions")
    assert len(task) == 200 and task.answer_type == "boolean"
    assert len(split(task).train) == 40
    small = load_task("synthetic/arithmetic", size=10, seed=7)
    assert len(small) == 10 and small.answer_type == "number"
    assert small == load_task("Synthetic/Arithmetic", size=10, seed=7)
    example = small.examples[0]
    assert grade(f"The answer is {example.target}.", example.target)


def test_synthetic_size_must_be_positive() -> None:
    from opro.tasks import TaskError

    with pytest.raises(TaskError):
        load_task("synthetic/arithmetic", size=0)
