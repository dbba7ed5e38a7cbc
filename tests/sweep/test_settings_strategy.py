"""A sweep stored before `--strategy` existed resumes; a changed strategy does not."""

from __future__ import annotations

from opro.optimize.loop import OptimizeConfig
from opro.sweep.settings import ModelSettings, SweepSettings, resume_differences


def described(**options: object) -> dict[str, object]:
    settings = SweepSettings(
        patterns=("bbh/navigate",),
        scorer=ModelSettings("simulated/s"),
        optimizer=ModelSettings("simulated/o"),
        optimize=OptimizeConfig(steps=2, **options),  # type: ignore[arg-type]
    )
    return settings.describe()


def test_an_old_sweep_without_the_strategy_keys_resumes_as_opro() -> None:
    old = described()
    optimize = old["optimize"]
    assert isinstance(optimize, dict)
    del optimize["strategy"], optimize["population"]
    assert resume_differences(old, described()) == []
    diffs = resume_differences(old, described(strategy="evoprompt-ga"))
    assert diffs == [("optimize.strategy", None, "evoprompt-ga")]
    assert resume_differences(described(), described(strategy="evoprompt-de", population=3)) == [
        ("optimize.population", None, 3),
        ("optimize.strategy", "opro", "evoprompt-de"),
    ]
