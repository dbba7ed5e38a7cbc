"""A one-line progress display for terminals (silent when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from opro.engine.evaluate import Progress


class ProgressBar:
    """Redraws at most 10 times a second, so it costs nothing on the hot path."""

    def __init__(self, stream: TextIO | None = None, *, label: str = "") -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._label = label
        self._last = 0.0
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and p.done < p.total:
            return
        self._last = now
        width = 24
        filled = int(width * p.done / p.total) if p.total else width
        bar = "#" * filled + "." * (width - filled)
        self._stream.write(
            f"\r{self._label}[{bar}] {p.done}/{p.total} calls={p.calls} "
            f"cached={p.cache_hits} errors={p.errors} 429s={p.n429}  "
        )
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
