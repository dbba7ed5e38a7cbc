"""The one exception the task loaders raise.

A `TaskError` is an `OproError` whose message is a single line naming the file (and line, for
JSONL and CSV) and what to do about it, so the CLI can print it as is instead of a traceback.
"""

from __future__ import annotations

from opro.errors import OproError


class TaskError(OproError):
    """A task name, data directory or data file that cannot be used."""
