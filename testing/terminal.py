"""Run the `opro` command on a pseudo-terminal and collect what it drew.

Live progress displays behave differently on a terminal (redrawn in place) than on a pipe
(plain lines); tests of the terminal case need a real pty, which this module provides once.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Sequence


def run_in_terminal(
    args: Sequence[str], *, rows: int = 40, columns: int = 200, timeout: float = 120.0
) -> tuple[int, str]:
    """`python -m opro.cli.main ARGS` with a pty as stdin, stdout and stderr: its exit code
    and everything written to the terminal (escape sequences included)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "opro.cli.main", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        proc.wait(timeout=timeout)
    return proc.returncode, b"".join(chunks).decode(errors="replace")
