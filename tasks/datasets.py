"""The benchmark tasks of the OPRO paper, user data files, and generated tasks, by name.

`load_task` understands:

* ``gsm8k``: ``gsm_data/gsm_train.tsv`` then ``gsm_data/gsm_test.tsv`` (question, answer,
  solution; no header). The test file is the official test set (`Task.test_start`).
* ``bbh/<task>``: one of the 27 files in ``BIG-Bench-Hard-data/`` (``{"examples": [...]}``).
* ``multiarith``: ``MultiArith-data/MultiArith.json`` (``sQuestion``, ``lSolutions``).
* ``aqua``: ``AQuA-data/AQuA.json``, JSON lines whose options ("A)...") are rendered into the
  question as the paper's code does: a "(A)..." line each, then the line
  "What's the answer in (A) (B) (C) (D) (E)?".
* ``synthetic/boolean_expressions`` and ``synthetic/arithmetic``: generated, seeded, offline.
* ``hf:<dataset>[:<config>]``: a Hugging Face dataset (needs the optional ``datasets`` package).
* a path to a ``.jsonl``, ``.csv`` or ``.json`` file of input/target examples.

Data files are found in `data_dir`, else in the directory named by ``OPRO_DATA_DIR``: the
layout of the paper's data release. They are never copied into the repository.

Default training fractions follow the paper's code: 3.5% of GSM8K's training file, 20% of each
BBH task; MultiArith and AQuA were only used to test instructions found on GSM8K, so all of
their examples are test examples by default (pass `train_fraction` to `split` to optimize on
them); user files and generated tasks use 20% like BBH.
"""

from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from opro.tasks.errors import TaskError
from opro.tasks.grading import AnswerType, answer_type
from opro.tasks.synthetic import DEFAULT_SIZE, arithmetic_examples, boolean_expression_examples
from opro.tasks.types import Example
from opro.tasks.userdata import load_hf, load_user_file

DATA_DIR_ENV = "OPRO_DATA_DIR"
BBH_DIR = "BIG-Bench-Hard-data"
BBH_TASKS: tuple[str, ...] = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies", "word_sorting",
)  # fmt: skip
SYNTHETIC_TASKS: tuple[str, ...] = ("synthetic/boolean_expressions", "synthetic/arithmetic")
DATA_TASKS: tuple[str, ...] = ("gsm8k", *(f"bbh/{t}" for t in BBH_TASKS), "multiarith", "aqua")
GSM8K_TRAIN_FRACTION = 0.035
DEFAULT_TRAIN_FRACTION = 0.2
_USER_SUFFIXES = (".jsonl", ".csv", ".json")


@dataclass(frozen=True, slots=True)
class Task:
    """A named, loaded set of examples and how to split and grade it.

    When `test_start` is set, ``examples[test_start:]`` are the dataset's official test set and
    splits draw training examples only from the ones before it (`pool`).
    """

    name: str
    examples: tuple[Example, ...]
    answer_type: AnswerType
    default_train_fraction: float = DEFAULT_TRAIN_FRACTION
    is_multiple_choice: bool = False
    test_start: int | None = None
    source: str = ""

    @property
    def pool(self) -> tuple[Example, ...]:
        """The examples training and validation splits are drawn from."""
        return self.examples if self.test_start is None else self.examples[: self.test_start]

    @property
    def official_test(self) -> tuple[Example, ...]:
        """The dataset's own test set, empty when it has none."""
        return () if self.test_start is None else self.examples[self.test_start :]

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One line of `opro tasks`: a loadable task, its size and its answer type."""

    name: str
    count: int
    answer_type: AnswerType
    source: str = ""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: `data_dir`, else $OPRO_DATA_DIR; it must exist."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise TaskError(
            f"no data directory: pass --data-dir (data_dir=...) or set {DATA_DIR_ENV} to the "
            "folder holding gsm_data/ and BIG-Bench-Hard-data/"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise TaskError(
            f"data directory {path} does not exist; pass --data-dir or set {DATA_DIR_ENV} to "
            "the folder holding gsm_data/ and BIG-Bench-Hard-data/"
        )
    return path


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskError(
            f"{path} not found; point --data-dir or {DATA_DIR_ENV} at the OPRO data release"
        ) from None
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not UTF-8 text (byte {exc.start}); restore the file") from None
    except OSError as exc:
        raise TaskError(f"{path}: cannot be read ({exc.strerror})") from None


def _gsm8k_file(path: Path, part: str) -> list[Example]:
    examples: list[Example] = []
    for number, line in enumerate(_read(path).split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise TaskError(
                f"{path} line {number}: expected question<TAB>answer[<TAB>solution]; "
                "restore the file from the data release"
            )
        target = fields[1].strip().replace(",", "")
        examples.append(Example(fields[0].strip(), target, id=f"{part}/{len(examples)}"))
    if not examples:
        raise TaskError(f"{path}: no examples; restore the file from the data release")
    return examples


def _load_gsm8k(root: Path) -> Task:
    train = _gsm8k_file(root / "gsm_data" / "gsm_train.tsv", "train")
    test = _gsm8k_file(root / "gsm_data" / "gsm_test.tsv", "test")
    return Task(
        "gsm8k", (*train, *test), "number", GSM8K_TRAIN_FRACTION,
        test_start=len(train), source=str(root / "gsm_data"),
    )  # fmt: skip


def _json(path: Path) -> object:
    try:
        return json.loads(_read(path))
    except json.JSONDecodeError as exc:
        raise TaskError(
            f"{path} line {exc.lineno}: not valid JSON ({exc.msg}); restore the file"
        ) from None


def _load_bbh(root: Path, task: str) -> Task:
    path = root / BBH_DIR / f"{task}.json"
    data = _json(path)
    rows = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise TaskError(f'{path}: expected {{"examples": [...]}}; restore the file')
    examples: list[Example] = []
    for index, row in enumerate(rows):
        if not (
            isinstance(row, dict)
            and isinstance(row.get("input"), str)
            and isinstance(row.get("target"), str)
        ):
            raise TaskError(f"{path} example {index}: needs string 'input' and 'target'")
        examples.append(Example(row["input"], row["target"].strip(), id=str(index)))
    return _task(f"bbh/{task}", examples, DEFAULT_TRAIN_FRACTION, str(path))


def _load_multiarith(root: Path) -> Task:
    path = root / "MultiArith-data" / "MultiArith.json"
    data = _json(path)
    if not isinstance(data, list):
        raise TaskError(f"{path}: expected a JSON list of problems; restore the file")
    examples: list[Example] = []
    for index, row in enumerate(data):
        question = row.get("sQuestion") if isinstance(row, dict) else None
        solutions = row.get("lSolutions") if isinstance(row, dict) else None
        if not isinstance(question, str) or not isinstance(solutions, list) or not solutions:
            raise TaskError(f"{path} item {index}: needs 'sQuestion' and 'lSolutions'")
        value = solutions[0]
        if not isinstance(value, int | float):
            raise TaskError(f"{path} item {index}: 'lSolutions' must hold numbers")
        # The paper's code grades against int(lSolutions[0]).
        target = str(int(value)) if float(value).is_integer() else repr(float(value))
        examples.append(Example(question.strip(), target, id=str(index)))
    return _task("multiarith", examples, 0.0, str(path))


def _load_aqua(root: Path) -> Task:
    path = root / "AQuA-data" / "AQuA.json"
    examples: list[Example] = []
    for number, line in enumerate(_read(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{where}: not valid JSON ({exc.msg}); restore the file") from None
        options = row.get("options") if isinstance(row, dict) else None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("question"), str)
            or not isinstance(row.get("correct"), str)
            or not isinstance(options, list)
            or not all(isinstance(o, str) and o[1:2] == ")" for o in options)
        ):
            raise TaskError(f"{where}: needs 'question', 'correct' and options like 'A)...'")
        lines = [row["question"], *(f"({option}" for option in options)]
        lines.append("What's the answer in (A) (B) (C) (D) (E)?")
        choices = tuple(option[2:] for option in options)
        examples.append(
            Example("\n".join(lines), row["correct"].strip(), str(len(examples)), choices)
        )
    return _task("aqua", examples, 0.0, str(path))


def _task(name: str, examples: list[Example], fraction: float, source: str) -> Task:
    if not examples:
        raise TaskError(f"{source}: no examples")
    kinds = Counter(answer_type(e.target, e.input) for e in examples)
    kind = kinds.most_common(1)[0][0]
    return Task(name, tuple(examples), kind, fraction, kind == "choice", source=source)


def data_files(name: str) -> tuple[str, ...]:
    """The files, relative to the data directory, that a data-release task is read from."""
    if name == "gsm8k":
        return ("gsm_data/gsm_train.tsv", "gsm_data/gsm_test.tsv")
    if name == "multiarith":
        return ("MultiArith-data/MultiArith.json",)
    if name == "aqua":
        return ("AQuA-data/AQuA.json",)
    return (f"{BBH_DIR}/{name.removeprefix('bbh/')}.json",)


def _unknown(name: str) -> TaskError:
    known = [*DATA_TASKS, *SYNTHETIC_TASKS]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return TaskError(
        f"unknown task {name!r}; {hint}run `opro tasks` for the list, or give a .jsonl/.csv path"
    )


def load_task(
    name_or_path: str,
    *,
    data_dir: str | Path | None = None,
    input_field: str | None = None,
    target_field: str | None = None,
    choices_field: str | None = "choices",
    id_field: str | None = "id",
    size: int | None = None,
    seed: int = 0,
) -> Task:
    """Load a task by name or a user's data file by path.

    The `*_field` arguments name the columns of user files and Hugging Face datasets (by default
    "input"/"question" and "target"/"answer"); `size` and `seed` shape the generated tasks.
    """
    name = name_or_path.strip()
    lowered = name.lower()
    if lowered.startswith("hf:"):
        examples, test_start = load_hf(
            name[3:], input_field=input_field, target_field=target_field,
            choices_field=choices_field, id_field=id_field,
        )  # fmt: skip
        task = _task(name, list(examples), DEFAULT_TRAIN_FRACTION, name)
        # A dataset with only a "test" split is split like any other.
        return replace(task, test_start=test_start) if test_start else task
    if lowered in SYNTHETIC_TASKS:
        count = DEFAULT_SIZE if size is None else size
        if count < 1:
            raise TaskError(f"{name}: size must be at least 1")
        kind: AnswerType = "boolean" if lowered.endswith("boolean_expressions") else "number"
        make = boolean_expression_examples if kind == "boolean" else arithmetic_examples
        source = f"generated (size={count}, seed={seed})"
        return Task(lowered, make(count, seed), kind, DEFAULT_TRAIN_FRACTION, source=source)
    if lowered.endswith(_USER_SUFFIXES) or Path(name).expanduser().is_file():
        path = Path(name).expanduser()
        examples = load_user_file(
            path, input_field=input_field, target_field=target_field,
            choices_field=choices_field, id_field=id_field,
        )  # fmt: skip
        return _task(name, list(examples), DEFAULT_TRAIN_FRACTION, str(path))
    if lowered not in DATA_TASKS:
        raise _unknown(name)
    root = resolve_data_dir(data_dir)
    if lowered == "gsm8k":
        return _load_gsm8k(root)
    if lowered == "multiarith":
        return _load_multiarith(root)
    if lowered == "aqua":
        return _load_aqua(root)
    return _load_bbh(root, lowered.removeprefix("bbh/"))


def list_tasks(data_dir: str | Path | None = None) -> list[TaskInfo]:
    """Every task that can be loaded here, for `opro tasks`.

    The generated tasks are always listed; the paper's tasks when a data directory is given or
    $OPRO_DATA_DIR is set (a named directory that does not exist is an error). Tasks whose files
    are absent from the directory are left out, so a partial copy of the release still lists;
    a file that is present but malformed raises `TaskError`.
    """
    infos = []
    if data_dir is not None or os.environ.get(DATA_DIR_ENV):
        root = resolve_data_dir(data_dir)
        for name in DATA_TASKS:
            if not all((root / relative).is_file() for relative in data_files(name)):
                continue
            task = load_task(name, data_dir=root)
            infos.append(TaskInfo(name, len(task), task.answer_type, task.source))
    for name in SYNTHETIC_TASKS:
        task = load_task(name)
        infos.append(TaskInfo(name, len(task), task.answer_type, task.source))
    return infos
