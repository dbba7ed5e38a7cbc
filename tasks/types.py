"""The example type shared by datasets, prompt rendering, grading and the engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Example:
    """One question with its reference answer.

    `choices` holds the option texts of a multiple-choice question in order (A, B, ...),
    when the dataset gives them separately from `input`; `id` is stable within a dataset
    so that splits and logs can name examples.
    """

    input: str
    target: str
    id: str = ""
    choices: tuple[str, ...] = ()
