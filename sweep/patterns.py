"""Task patterns: which tasks `--tasks 'bbh/*' --tasks gsm8k --tasks my.jsonl` means.

A pattern is an exact task name (`gsm8k`, `bbh/navigate`, `synthetic/arithmetic`, `hf:...`),
a glob over the task names (`bbh/*`, `bbh/logical_*`), or a path to a .jsonl/.csv/.json
file. Globs match the names `tasks.list_tasks` would list (the paper's tasks whose files are
in the data directory, and the generated ones), but without loading the files, so one
malformed file fails its own task when it runs instead of the whole expansion.

BBH has 27 files for 23 tasks: logical_deduction and tracking_shuffled_objects come in three,
five and seven objects. The paper reports the seven-object files (its 23 BBH tasks), so a glob
leaves out the four smaller sizes unless `include_variants` is set; an exact name always
works. An unknown name, a glob that matches nothing or a missing file is a one-line error,
raised before anything is spent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from opro.errors import SettingsError
from opro.tasks.datasets import DATA_TASKS, SYNTHETIC_TASKS, data_files, resolve_data_dir
from opro.tasks.errors import TaskError

BBH_SIZE_VARIANTS: frozenset[str] = frozenset(
    {
        "bbh/logical_deduction_three_objects",
        "bbh/logical_deduction_five_objects",
        "bbh/tracking_shuffled_objects_three_objects",
        "bbh/tracking_shuffled_objects_five_objects",
    }
)
_USER_SUFFIXES = (".jsonl", ".csv", ".json")
_GLOB = re.compile(r"[*?\[]")


def task_names(data_dir: str | Path | None = None) -> tuple[list[str], TaskError | None]:
    """The loadable task names here, and why the paper's tasks are missing (if they are)."""
    try:
        root = resolve_data_dir(data_dir)
    except TaskError as exc:
        return list(SYNTHETIC_TASKS), exc
    found = [n for n in DATA_TASKS if all((root / f).is_file() for f in data_files(n))]
    return [*found, *SYNTHETIC_TASKS], None


def _is_path(pattern: str) -> bool:
    return pattern.lower().endswith(_USER_SUFFIXES) or Path(pattern).expanduser().is_file()


def expand_tasks(
    patterns: Sequence[str],
    *,
    data_dir: str | Path | None = None,
    include_variants: bool = False,
) -> list[str]:
    """The task names `patterns` stand for, in the order given, each once."""
    if not patterns:
        raise SettingsError("no tasks: give --tasks 'bbh/*' (repeatable), a name or a file")
    names, missing_data = task_names(data_dir)
    chosen: dict[str, None] = {}
    for raw in patterns:
        pattern = raw.strip()
        lowered = pattern.lower()
        if not pattern:
            raise SettingsError("an empty task pattern; give a task name, a glob or a file")
        if lowered.startswith("hf:"):
            chosen[pattern] = None
        elif _GLOB.search(pattern) is None and _is_path(pattern):
            if not Path(pattern).expanduser().is_file():
                raise SettingsError(f"task file {pattern} does not exist")
            chosen[pattern] = None
        elif _GLOB.search(pattern) is None:
            if lowered not in names:
                raise _unknown(pattern, lowered, missing_data)
            chosen[lowered] = None
        else:
            matched = [n for n in names if fnmatchcase(n, lowered)]
            kept = [n for n in matched if include_variants or n not in BBH_SIZE_VARIANTS]
            if not kept:
                raise _no_match(pattern, lowered, matched, missing_data)
            chosen.update(dict.fromkeys(kept))
    return list(chosen)


def _unknown(pattern: str, lowered: str, missing_data: TaskError | None) -> Exception:
    if lowered in DATA_TASKS and missing_data is not None:
        return missing_data
    if lowered in DATA_TASKS:
        return SettingsError(f"task {pattern!r}: its data file is not in the data directory")
    return SettingsError(
        f"unknown task {pattern!r}; run `opro tasks` for the names, use a glob like 'bbh/*', "
        "or give a .jsonl/.csv file"
    )


def _no_match(
    pattern: str, lowered: str, matched: list[str], missing_data: TaskError | None
) -> Exception:
    if matched:
        return SettingsError(
            f"task pattern {pattern!r} matches only BBH size variants (not paper tasks); "
            "add --include-variants, or name them exactly"
        )
    if missing_data is not None and any(fnmatchcase(n, lowered) for n in DATA_TASKS):
        return missing_data
    return SettingsError(
        f"task pattern {pattern!r} matches no task; run `opro tasks` for the names"
    )


def task_dirs(names: Sequence[str]) -> list[str]:
    """A distinct, file-system-safe directory name per task: bbh/navigate -> bbh__navigate;
    a data file by its file name."""
    taken: set[str] = set()
    dirs = []
    for name in names:
        base = Path(name).name if _is_path(name) else name.replace("/", "__")
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "task"
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate.lower())
        dirs.append(candidate)
    return dirs
