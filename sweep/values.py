"""Reading JSON files for the reports: each value checked, each failure naming its file.

Values from disk are data written by other programs (or edited by hand): every accuracy must be
a finite number in [0, 1], every count a non-negative whole number, every amount finite and
non-negative. A file that cannot be read or parsed, or a value that fails its check, is a
`ReportError` whose one line names the file and the value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from opro.engine.spend import Spend
from opro.sweep.model import ReportError


def load_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{path} is missing") from None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON ({exc}); restore or remove it") from None


def obj(value: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{path}: {what} is not a JSON object")
    return value


def fraction(value: Any, path: Path, what: str) -> float | None:
    """An accuracy: None, or a finite number in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{path}: {what} is {value!r}, not an accuracy")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ReportError(f"{path}: {what} is {value!r}, not an accuracy between 0 and 1")
    return float(value)


def count(value: Any, path: Path, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"{path}: {what} is {value!r}, not a non-negative whole number")
    return value


def amount(value: Any, path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{path}: {what} is {value!r}, not a number")
    if not (math.isfinite(value) and value >= 0):
        raise ReportError(f"{path}: {what} is {value!r}, not a finite non-negative number")
    return float(value)


def spend_of(data: Any, path: Path, what: str) -> Spend:
    spend = Spend.from_dict(data)
    if spend is None:
        raise ReportError(f"{path}: {what} is not calls, tokens and a cost")
    return spend


def dig(value: Any, *keys: str) -> Any:
    """value[k1][k2]..., or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def string(value: Any, path: Path, what: str) -> str:
    if not isinstance(value, str):
        raise ReportError(f"{path}: {what} is not a string")
    return value
