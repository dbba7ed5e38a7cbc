"""A fake server in its own process, for tests and benchmarks that run the CLI as a subprocess.

The child prints one `READY <base_url>` line once it listens (as `python -m
opro.testing.fake_openai` does); its counters are read over HTTP from `/stats`.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from types import TracebackType
from typing import Any

import orjson


class ServerProcess:
    """Starts `command` (default: the fake OpenAI server with `args`) and waits for READY."""

    def __init__(self, *args: str, command: list[str] | None = None) -> None:
        argv = command or [sys.executable, "-m", "opro.testing.fake_openai", "--port", "0"]
        self.proc = subprocess.Popen([*argv, *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1]
        self.root = self.base_url.rsplit("/v1", 1)[0]

    def stats(self, prompts: bool = False) -> dict[str, Any]:
        url = self.root + "/stats" + ("?prompts=1" if prompts else "")
        with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
            result: dict[str, Any] = orjson.loads(resp.read())
            return result

    def reset(self) -> None:
        request = urllib.request.Request(self.root + "/stats/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def inject(self, kind: str, count: int = 1) -> None:
        """The server's `inject()`: the next `count` requests fail with `kind`."""
        self._post(f"/inject?kind={kind}&count={count}", b"")

    def inject_headers(self, headers: dict[str, str], count: int = 1) -> None:
        """The server's `inject_headers()`: on the next `count` successful answers."""
        self._post(f"/inject?count={count}", orjson.dumps({"headers": headers}))

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(self.root + path, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10):  # loopback only
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
