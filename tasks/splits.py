"""Train / validation / test splits drawn the way the paper's code draws them.

The paper seeds NumPy's legacy global generator (`np.random.seed(0)`) and then draws
`np.random.choice(n, size=int(train_ratio * n), replace=False)` for the training indices, and
the validation indices from the remainder with the same generator. `np.random.RandomState(seed)`
is that same generator without the global state, so with seed 0 the indices here are the
paper's: 261 of GSM8K's 7,473 training questions (int(0.035 * 7473)), 50 of a 250-example BBH
task, 37 of causal_judgement's 187, 29 of penguins_in_a_table's 146, 35 of snarks' 178.

Tasks with an official test set (GSM8K) draw training and validation examples from the rest of
the data only and use the official test set as the test split, as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opro.checks import FRACTION
from opro.errors import SettingsError
from opro.tasks.datasets import Task
from opro.tasks.types import Example


@dataclass(frozen=True, slots=True)
class Split:
    """Three disjoint groups of a task's examples, each in the dataset's order."""

    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]


def split(
    task: Task,
    *,
    train_fraction: float | None = None,
    validation_fraction: float = 0.0,
    seed: int = 0,
) -> Split:
    """Split `task`; `train_fraction` defaults to the task's own (the paper's) fraction.

    Sizes are `int(fraction * n)` (rounded down, as in the paper) where n counts the examples
    that are not in an official test set. The same arguments always give the same split.
    """
    fraction = task.default_train_fraction if train_fraction is None else train_fraction
    FRACTION.check("train_fraction", fraction)
    FRACTION.check("validation_fraction", validation_fraction)
    if fraction + validation_fraction > 1.0 + 1e-12:
        raise SettingsError("train_fraction + validation_fraction must not exceed 1")
    pool = task.pool
    n = len(pool)
    rng = np.random.RandomState(seed)
    train_index: list[int] = []
    if n:
        train_index = sorted(int(i) for i in rng.choice(n, size=int(fraction * n), replace=False))
    chosen = set(train_index)
    rest = np.array([i for i in range(n) if i not in chosen], dtype=np.int64)
    val_size = min(int(validation_fraction * n), len(rest))
    val_index: list[int] = []
    if val_size:
        val_index = sorted(int(i) for i in rng.choice(rest, size=val_size, replace=False))
    chosen |= set(val_index)
    if task.test_start is None:
        test = tuple(pool[i] for i in range(n) if i not in chosen)
    else:
        test = task.official_test
    return Split(
        train=tuple(pool[i] for i in train_index),
        validation=tuple(pool[i] for i in val_index),
        test=test,
    )
