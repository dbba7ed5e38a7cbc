"""A real llama.cpp server (`llama_cpp.server`, the `local-server` extra) on a free loopback
port, serving the embedded SmolLM2-135M, for tests that need a real OpenAI-compatible server.

`LlamaServer` starts it, waits until `/v1/models` answers, and stops it on exit; when it
dies or does not come up, `LlamaServerError` carries the tail of its log.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

READY_TRIES = 600  # x 0.1 s between polls: usually up within 2 s, slower on a loaded machine


class LlamaServerError(RuntimeError):
    """The server exited or never answered; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # loopback only
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


class LlamaServer:
    """`gguf` served as `alias` on 127.0.0.1; `base_url` ends in /v1."""

    def __init__(self, gguf: Path, alias: str, log_path: Path, *, n_threads: int = 2) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log_path = log_path
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
            "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "2048", "--n_threads", str(n_threads),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> str:
        """Poll `/models` until it answers; the base URL."""
        for _ in range(READY_TRIES):
            if self.proc.poll() is not None:
                raise LlamaServerError(
                    f"llama.cpp server exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            if _ready(self.base_url + "/models"):
                return self.base_url
            time.sleep(0.1)
        raise LlamaServerError(
            f"llama.cpp server not ready after {READY_TRIES} polls:\n{_tail(self.log_path)}"
        )

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
