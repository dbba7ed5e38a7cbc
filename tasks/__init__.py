"""Tasks: the paper's benchmarks and user data as examples, their splits, prompts and grading.

`load_task` turns a name ("gsm8k", "bbh/navigate", "aqua", "synthetic/arithmetic", a .jsonl or
.csv path, "hf:<dataset>") into a `Task`; `split` draws its train/validation/test examples the
way the paper's code does; `render_prompt` places an instruction in a question; `grade` decides
whether a scorer's output is right. `GRADING_VERSION` belongs in every cache key of a grade.
"""

from __future__ import annotations

from .datasets import Task, TaskInfo, list_tasks, load_task
from .errors import TaskError
from .grading import GRADING_VERSION, answer_type, grade
from .prompts import render_prompt
from .splits import Split, split
from .types import Example

__all__ = [
    "GRADING_VERSION",
    "Example",
    "Split",
    "Task",
    "TaskError",
    "TaskInfo",
    "answer_type",
    "grade",
    "list_tasks",
    "load_task",
    "render_prompt",
    "split",
]
