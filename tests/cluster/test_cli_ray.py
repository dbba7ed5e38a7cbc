"""`opro sweep --ray`'s address is checked before anything starts (no Ray needed; the
numbers, `--ray-cpus`, are checked with every other in tests/test_cli_numbers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opro.cli.main import main


@pytest.mark.parametrize("value", ["nowhere", "ray://", "http://head:10001"])
def test_a_bad_ray_address_is_one_line(
    value: str, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "sweep"
    argv = ["sweep", "--tasks", "bbh/navigate", "--data-dir", str(data_dir), "--ray", value]
    assert main([*argv, "--scorer", "simulated/s", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"opro: error: the Ray address is 'auto' or ray://HOST:PORT, got {value!r}"]
    assert not run_dir.exists()


@pytest.mark.requires_extra("ray")
def test_an_unreachable_cluster_is_one_line_without_ray_noise(
    tmp_path: Path, data_dir: Path
) -> None:
    """Ray's client prints an INFO line and a timeout UserWarning of its own around a failed
    connect (about 30 s); only our line may reach the user, and nothing is written."""
    run_dir = tmp_path / "sweep"
    argv = [sys.executable, "-m", "opro.cli.main", "sweep", "--tasks", "bbh/navigate"]
    argv += ["--data-dir", str(data_dir), "--scorer", "simulated/s", "--evaluate-only"]
    argv += ["--instruction", "x", "--run-dir", str(run_dir), "--ray", "ray://127.0.0.1:1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("sweep plan")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("opro: error: cannot connect to Ray at ray://127.0.0.1:1: ")
    assert not run_dir.exists()
