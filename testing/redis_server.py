"""A real `redis-server` on 127.0.0.1, for the shared cache's tests and benchmark.

The server runs from a temporary directory on a free port, never daemonized, with
append-only persistence (fsync on every write) when asked, so a test can stop and restart it
and find every stored result again. `start` returns once the server answers PING; `stop`
sends SIGTERM and waits for the process. The binary is `$REDIS_SERVER`, else
`redis-server` on PATH, else `/usr/bin/redis-server` (Debian: `apt-get install
redis-server`); `find_redis_server` returns None when there is none.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

INSTALL = "apt-get install redis-server (or set REDIS_SERVER to a redis-server binary)"
READY_TIMEOUT_S = 20.0


def find_redis_server() -> str | None:
    """The redis-server binary to run, or None."""
    env = os.environ.get("REDIS_SERVER")
    if env:
        return env if Path(env).is_file() else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; `with RedisServer() as server: server.url`."""

    def __init__(
        self,
        *,
        persistent: bool = False,
        password: str | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise FileNotFoundError(f"no redis-server: {INSTALL}")
        self.binary = found
        self.persistent = persistent
        self.password = password
        self._tmp = tempfile.TemporaryDirectory(prefix="opro-redis-")
        self.directory = Path(self._tmp.name)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self) -> RedisServer:
        """Start the server (on the same port and directory after a `stop`); return when
        it answers PING."""
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # never leave a server running behind a failed start
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self.client() as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {log}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass  # not listening yet, or still loading its data (LOADING)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
                time.sleep(0.01)  # a poll interval, not an ordering: PING decides

    def stop(self) -> None:
        """SIGTERM (the server writes its append-only file) and wait for the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self._tmp.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
