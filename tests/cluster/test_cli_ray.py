"""`opro sweep --ray`'s address is checked before anything starts (no Ray needed; the
numbers, `--ray-cpus`, are checked with every other in tests/test_cli_numbers.py)."""

from __future__ import annotations

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
