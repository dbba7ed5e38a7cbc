"""A sweep made before a loop option existed (racing) still resumes, unless it is turned on."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from opro.optimize.loop import OptimizeConfig
from opro.sweep.settings import resume_differences


def settings(**options: Any) -> dict[str, Any]:
    return {"mode": "optimize", "optimize": {**asdict(OptimizeConfig()), **options}}


def test_an_old_sweep_without_the_racing_options_resumes() -> None:
    stored = settings()
    del stored["optimize"]["racing"], stored["optimize"]["racing_delta"]
    assert resume_differences(stored, settings()) == []
    assert resume_differences(stored, settings(racing=True)) == [("optimize.racing", None, True)]
