"""Grading is prepared once per example, and that changes no grade.

`prepare_grade(target, question=..., rules=...)` does the work that depends only on the
example (the target's normalisation and type, the options read from the question, the
option-text patterns) once; the returned check grades any number of outputs. Speed must not
move a single grade, so a corpus of outputs (every paper task's examples, each against
outputs shaped like right and wrong answers, option letters and texts, numbers, booleans,
reference-code quirks and the simulated model's answers) is graded by both rule sets, and:

* the verdicts are pinned by a digest computed with the grading code before it was prepared
  per example (GRADING_VERSION 2, reference-1); a changed digest means a changed grade, which
  needs a version bump, not a new digest;
* `grade(...)` and a prepared check agree on every case, the prepared check reused across
  outputs, as the engine reuses it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opro.providers.simulated import SimulatedProvider
from opro.tasks import grade, list_tasks, load_task
from opro.tasks.grading import GRADING_VERSION, GRADINGS, Grading, prepare_grade
from opro.tasks.grading_reference import REFERENCE_GRADING_VERSION
from opro.tasks.prompts import render_prompt

# Verdicts of the corpus below by the grading code before this change, as a bit string of
# (strict, reference) per case: cases, strict-correct count, reference-correct count, sha256.
PINNED = (11164, 3635, 3857, "1ef3da756b627458820f0724c6e7d1c8b6eda53838a63ebf4596f4594233076e")

_OPTION_TEXT = re.compile(r"^\(?[A-R]\)\s*(.+)$", re.MULTILINE)
_SIM = SimulatedProvider("corpus")
_INSTRUCTIONS = ("", "Let's think step by step.", "Answer with the option letter.")


def _predictions(target: str, question: str) -> list[str]:
    """Outputs shaped like the answers graders meet, right and wrong, for one example."""
    options = _OPTION_TEXT.findall(question)[:4]
    preds = [
        target,
        f"{target}.",
        f"The answer is {target}.",
        f"So the answer is {target.lower()}",
        f"Answer: {target}",
        f"answer: {target}\nQ: the next question? A: (B)",
        f"{target} is the answer.",
        f"**{target}**",
        f"\\boxed{{{target}}}",
        f"Let's think step by step. The first part is: {target}, then it follows.",
        f"Step-by-step answer: {target}",
        "(A)",
        "the answer is (b)",
        "C",
        "d.",
        "Either (A) or (B).",
        "True",
        "False",
        "yes",
        "No, it is not.",
        "valid",
        "The argument is invalid.",
        "0",
        "1",
        "The answer is 42",
        "The answer is 3.14159",
        "The answer is twenty-five.",
        "seventy-two",
        "The answer is none.",
        "It costs $1,234.50 in total, so 1234.5",
        "I cannot tell.",
        "",
        "} ]",
        "apple banana cherry date",
    ]
    preds += [f"The answer is {text}." for text in options]
    preds += [f"{text}" for text in options[:2]]
    if re.fullmatch(r"-?\d+(\.\d+)?", target.strip()):
        value = float(target)
        preds += [f"The answer is {value + 1:g}", f"{target} = {value * 2:g}", f"#### {target}"]
    prompts = (render_prompt(ins, question) for ins in _INSTRUCTIONS)
    preds += [_SIM.answer(prompt, sample) for prompt in prompts for sample in range(2)]
    return preds


def corpus(data_dir: Path, per_task: int) -> Iterator[tuple[str, str, str]]:
    """(prediction, target, question) for `per_task` evenly spread examples of every task."""
    for row in list_tasks(str(data_dir)):
        examples = load_task(row.name, data_dir=str(data_dir)).examples
        step = max(1, len(examples) // per_task)
        for example in examples[::step][:per_task]:
            for prediction in _predictions(example.target, example.input):
                yield prediction, example.target, example.input


def verdicts(cases: list[tuple[str, str, str]]) -> tuple[int, int, int, str]:
    bits = []
    for prediction, target, question in cases:
        strict = grade(prediction, target, question=question)
        reference = grade(prediction, target, question=question, rules="reference")
        bits.append(f"{int(strict)}{int(reference)}")
    joined = "".join(bits)
    return (
        len(cases),
        joined[0::2].count("1"),
        joined[1::2].count("1"),
        hashlib.sha256(joined.encode()).hexdigest(),
    )


@pytest.fixture(scope="module")
def cases(data_dir: Path) -> list[tuple[str, str, str]]:
    return list(corpus(data_dir, per_task=8))


def test_grades_match_the_code_before_preparation(cases: list[tuple[str, str, str]]) -> None:
    assert (GRADING_VERSION, REFERENCE_GRADING_VERSION) == ("2", "reference-1")
    assert verdicts(cases) == PINNED


def test_a_prepared_check_grades_like_grade(cases: list[tuple[str, str, str]]) -> None:
    checks: dict[tuple[str, str, Grading], Callable[[str], bool]] = {}
    rules: Grading
    for prediction, target, question in cases:
        for rules in GRADINGS:
            check = checks.get((target, question, rules))
            if check is None:
                check = prepare_grade(target, question=question, rules=rules)
                checks[(target, question, rules)] = check
            expected = grade(prediction, target, question=question, rules=rules)
            assert check(prediction) is expected, (rules, prediction, target)
    assert len(checks) < len(cases) / 10  # each check graded many outputs
