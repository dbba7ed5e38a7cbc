"""Run a Python command in a fresh child process and measure it as a user would see it.

`measure(["-m", "opro.cli.main", "evaluate", ...])` returns the child's wall time, its CPU
time (its own rusage, from `os.wait4`), its peak resident memory and its stdout.

The peak is read inside the child (`VmHWM` in /proc/self/status, at exit): `ru_maxrss` of a
child on Linux also counts the parent's memory at the fork, which would make a child look
as big as the benchmark that started it. Where /proc is missing, `ru_maxrss` is used.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# Runs `-m module args...` or `-c code args...` and writes its own peak RSS at exit.
_WRAPPER = r"""
import atexit, runpy, sys

def _peak():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    sys.stderr.write("\nopro-measure peak_kb=%s\n" % line.split()[1])
                    sys.stderr.flush()
    except OSError:
        pass

atexit.register(_peak)
mode, target, *rest = sys.argv[1:]
if mode == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""
_PEAK = re.compile(r"^opro-measure peak_kb=(\d+)$", re.MULTILINE)


class CommandFailed(RuntimeError):
    """The measured command exited with a non-zero status."""


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float  # user + system
    peak_rss_mb: float
    stdout: str


def measure(args: list[str], *, env: dict[str, str] | None = None) -> Measured:
    """Run `python <args>` (`args` starts with "-m" or "-c"); raise if it fails."""
    if not args or args[0] not in ("-m", "-c"):
        raise ValueError("measure() runs `-m module ...` or `-c code ...`")
    argv = [sys.executable, "-c", _WRAPPER, *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise CommandFailed(f"{args[:4]} exited {proc.returncode}: {stderr[-2000:]}")
    peaks = _PEAK.findall(stderr)
    peak_kb = int(peaks[-1]) if peaks else usage.ru_maxrss
    return Measured(wall, usage.ru_utime + usage.ru_stime, peak_kb / 1024, stdout)
