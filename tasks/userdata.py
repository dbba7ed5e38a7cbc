"""Examples from a user's own file (JSONL, CSV, JSON) or from a Hugging Face dataset.

Column names are configurable; when they are not given the usual ones are tried ("input" or
"question", "target" or "answer"). Every problem is reported as a `TaskError` naming the file
and line, because a user who fixes a 10,000-line file needs to know where to look.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from opro.tasks.errors import TaskError
from opro.tasks.types import Example

INPUT_COLUMNS = ("input", "question", "problem", "prompt")
TARGET_COLUMNS = ("target", "answer", "label", "output")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# The requested (input, target, choices, id) column names; None means "the usual ones".
Names = tuple[str | None, str | None, str | None, str | None]


def _pick(
    available: Iterable[str], wanted: str | None, defaults: tuple[str, ...], what: str, where: str
) -> str:
    names = list(available)
    if wanted is not None:
        if wanted not in names:
            raise TaskError(
                f"{where}: no {what} column {wanted!r} (columns: {', '.join(names) or 'none'})"
            )
        return wanted
    for name in defaults:
        if name in names:
            return name
    raise TaskError(
        f"{where}: no {what} column (columns: {', '.join(names) or 'none'}); "
        f"name it {defaults[0]!r} or pass {what}_field=..."
    )


def _as_text(value: Any) -> str:
    """JSON numbers and booleans become the strings a model would write ("39", "True")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def _choices(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{where}: choices are not a valid JSON list ({exc.msg})") from None
        else:
            return tuple(part.strip() for part in text.split("|"))
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise TaskError(f"{where}: choices must be a list of strings or 'a|b|c'")
    return tuple(_as_text(v) for v in value)


def with_options(question: str, choices: tuple[str, ...]) -> str:
    """Append BBH-style option lines unless the question already lists "(A) ..." options."""
    if not choices or "(A)" in question:
        return question
    lines = [f"({_LETTERS[i]}) {text}" for i, text in enumerate(choices[: len(_LETTERS)])]
    return question.rstrip() + "\nOptions:\n" + "\n".join(lines)


def example_from_row(
    row: Mapping[str, Any],
    fields: tuple[str, str, str | None, str | None],
    where: str,
    default_id: str,
) -> Example:
    """One Example from a mapping, with `fields` = (input, target, choices or None, id or None)."""
    input_field, target_field, choices_field, id_field = fields
    values = {name: row.get(name) for name in (input_field, target_field)}
    for name, value in values.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            raise TaskError(f"{where}: {name!r} is missing or empty")
        if not isinstance(value, str | int | float | bool):
            raise TaskError(f"{where}: {name!r} must be text or a number")
    choices = _choices(row.get(choices_field), where) if choices_field else ()
    raw_id = row.get(id_field) if id_field else None
    return Example(
        input=with_options(_as_text(values[input_field]), choices),
        target=_as_text(values[target_field]).strip(),
        id=_as_text(raw_id) if raw_id not in (None, "") else default_id,
        choices=choices,
    )


def _fields(
    columns: Iterable[str],
    input_field: str | None,
    target_field: str | None,
    choices_field: str | None,
    id_field: str | None,
    where: str,
) -> tuple[str, str, str | None, str | None]:
    names = list(columns)
    return (
        _pick(names, input_field, INPUT_COLUMNS, "input", where),
        _pick(names, target_field, TARGET_COLUMNS, "target", where),
        choices_field if choices_field in names else None,
        id_field if id_field in names else None,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TaskError(f"{path}: file not found; check the path") from None
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise TaskError(f"{path}: cannot be read ({exc.strerror})") from None


def load_user_file(
    path: Path,
    *,
    input_field: str | None = None,
    target_field: str | None = None,
    choices_field: str | None = "choices",
    id_field: str | None = "id",
) -> tuple[Example, ...]:
    """Read a `.jsonl`, `.csv` or `.json` file of examples."""
    suffix = path.suffix.lower()
    text = _read_text(path)
    names: Names = (input_field, target_field, choices_field, id_field)
    if suffix == ".jsonl":
        examples = _from_jsonl(path, text, names)
    elif suffix == ".csv":
        examples = _from_csv(path, text, names)
    elif suffix == ".json":
        examples = _from_json(path, text, names)
    else:
        raise TaskError(f"{path}: unknown file type {suffix!r}; use .jsonl, .csv or .json")
    if not examples:
        raise TaskError(f"{path}: no examples; add at least one row with an input and a target")
    return examples


def _from_jsonl(path: Path, text: str, names: Names) -> tuple[Example, ...]:
    examples: list[Example] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(
                f"{where}: not valid JSON ({exc.msg}); write one object per line"
            ) from None
        if not isinstance(row, dict):
            raise TaskError(f"{where}: expected a JSON object with an input and a target")
        fields = _fields(row, *names, where=where)
        examples.append(example_from_row(row, fields, where, str(len(examples))))
    return tuple(examples)


def _from_csv(path: Path, text: str, names: Names) -> tuple[Example, ...]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames or []
    except csv.Error as exc:
        raise TaskError(f"{path} line 1: malformed CSV header ({exc})") from None
    fields = _fields(columns, *names, where=f"{path} (header)")
    examples: list[Example] = []
    try:
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row:
                raise TaskError(f"{where}: more values than header columns; quote commas")
            examples.append(example_from_row(row, fields, where, str(len(examples))))
    except csv.Error as exc:
        raise TaskError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
    return tuple(examples)


def _from_json(path: Path, text: str, names: Names) -> tuple[Example, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    rows = data.get("examples") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise TaskError(f'{path}: expected a list of objects or {{"examples": [...]}}')
    examples: list[Example] = []
    for index, row in enumerate(rows):
        where = f"{path} example {index}"
        if not isinstance(row, dict):
            raise TaskError(f"{where}: expected an object with an input and a target")
        fields = _fields(row, *names, where=where)
        examples.append(example_from_row(row, fields, where, str(index)))
    return tuple(examples)


def load_hf(
    spec: str,
    *,
    input_field: str | None = None,
    target_field: str | None = None,
    choices_field: str | None = "choices",
    id_field: str | None = "id",
) -> tuple[tuple[Example, ...], int | None]:
    """Load "<dataset>[:<config>]" with the `datasets` package, imported only now.

    Returns the examples with every split but "test" first, then the "test" split, and the index
    where the test split starts (None without one). A "#### 72" answer (GSM8K's format) keeps
    only the final answer.
    """
    dataset, _, config = spec.partition(":")
    if not dataset:
        raise TaskError("hf: needs a dataset name, as in hf:openai/gsm8k:main")
    try:
        module = importlib.import_module("datasets")
    except ImportError:
        raise TaskError(
            f"hf:{spec}: the 'datasets' package is not installed; pip install datasets"
        ) from None
    try:
        loaded = module.load_dataset(dataset, config) if config else module.load_dataset(dataset)
    except Exception as exc:  # the library raises many types; report them all the same way
        raise TaskError(f"hf:{spec}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, Mapping):
        raise TaskError(f"hf:{spec}: expected splits (a DatasetDict), got {type(loaded).__name__}")
    order = sorted(loaded, key=lambda name: (name == "test", name != "train", name))
    examples: list[Example] = []
    test_start = None
    for split_name in order:
        if split_name == "test":
            test_start = len(examples)
        rows: Iterable[Mapping[str, Any]] = loaded[split_name]
        fields: tuple[str, str, str | None, str | None] | None = None
        for index, row in enumerate(rows):
            where = f"hf:{spec} split {split_name} row {index}"
            if fields is None:
                fields = _fields(row, input_field, target_field, choices_field, id_field, where)
            example = example_from_row(row, fields, where, f"{split_name}/{index}")
            if "####" in example.target:
                final = example.target.rsplit("####", 1)[1].strip().replace(",", "")
                example = Example(example.input, final, example.id, example.choices)
            examples.append(example)
    if not examples:
        raise TaskError(f"hf:{spec}: the dataset has no rows")
    return tuple(examples), test_start
