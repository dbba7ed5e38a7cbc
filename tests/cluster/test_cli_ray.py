"""`opro sweep --ray`'s values are checked before anything starts (no Ray needed)."""

from __future__ import annotations

import pytest

from opro.cli.main import main


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--ray", "nowhere"), ("--ray", "ray://"), ("--ray-cpus", "nan"), ("--ray-cpus", "0")],
)
def test_a_bad_ray_option_is_one_line(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--tasks", "bbh/navigate", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("opro sweep: error: argument") and value in err[-1]
