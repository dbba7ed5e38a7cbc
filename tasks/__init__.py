"""Tasks: the paper's benchmarks and user data as examples, their splits, prompts and grading.

`load_task` turns a name ("gsm8k", "bbh/navigate", "aqua", "synthetic/arithmetic", a .jsonl or
.csv path, "hf:<dataset>") into a `Task`; `split` draws its train/validation/test examples the
way the paper's code does; `render_prompt` places an instruction in a question; `grade` decides
whether a scorer's output is right, by our strict rules or the paper's (`rules="reference"`).
`GRADING_VERSION` / `grading_version(rules)` name the rules a grade was made with.
"""

from __future__ import annotations

from opro.tasks.datasets import Task, TaskInfo, list_tasks, load_task
from opro.tasks.errors import TaskError
from opro.tasks.grading import (
    GRADING_VERSION,
    GRADINGS,
    Grading,
    answer_type,
    grade,
    grading_version,
)
from opro.tasks.prompts import render_prompt
from opro.tasks.splits import Split, split
from opro.tasks.types import Example

__all__ = [
    "GRADINGS",
    "GRADING_VERSION",
    "Example",
    "Grading",
    "Split",
    "Task",
    "TaskError",
    "TaskInfo",
    "answer_type",
    "grade",
    "grading_version",
    "list_tasks",
    "load_task",
    "render_prompt",
    "split",
]
