"""`opro.testing.measure`: a child's own time, CPU and peak memory, as benchmarks report them."""

from __future__ import annotations

import pytest

from opro.testing.measure import CommandFailed, measure

TOUCH_64_MB = (
    "b = bytearray(64 * 2**20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('ok')"
)


def test_the_peak_is_the_childs_own() -> None:
    ballast = bytearray(96 * 2**20)  # the parent is big; a child must not look as big
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = measure(["-c", "print('hi')"])
    big = measure(["-c", TOUCH_64_MB])
    assert small.stdout == "hi\n" and big.stdout == "ok\n"
    assert small.peak_rss_mb < 90 < len(ballast) / 2**20
    assert big.peak_rss_mb - small.peak_rss_mb >= 60
    assert big.cpu_s > 0 and big.wall_s > 0


def test_a_module_gets_its_arguments_and_a_failure_raises() -> None:
    shown = measure(["-m", "json.tool", "--help"])
    assert "usage" in shown.stdout
    with pytest.raises(CommandFailed, match="exited 3"):
        measure(["-c", "import sys; sys.exit(3)"])
    with pytest.raises(ValueError):
        measure(["print(1)"])
