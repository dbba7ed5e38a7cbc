"""The optional-extra helper of conftest.py: skip with the reason, or fail when CI says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

MISSING = "opro_no_such_extra_module"
CONFTEST = Path(__file__).with_name("conftest.py")


def test_a_present_module_passes(
    extras: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPRO_REQUIRE_EXTRAS", "1")
    extras("json", "asyncio")  # neither skips nor fails


@pytest.mark.parametrize("value", [None, "", "0"])
def test_a_missing_module_skips_with_the_reason(
    extras: Callable[..., None], monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("OPRO_REQUIRE_EXTRAS", raising=False)
    else:
        monkeypatch.setenv("OPRO_REQUIRE_EXTRAS", value)
    with pytest.raises(pytest.skip.Exception, match=f"needs the optional {MISSING}"):
        extras("json", MISSING)


def test_the_reason_names_the_install_command(
    extras: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPRO_REQUIRE_EXTRAS", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # nothing installed
    with pytest.raises(pytest.skip.Exception) as info:
        extras("ortools", "llama_cpp")
    assert "pip install -e '.[demos]'" in str(info.value)
    assert "pip install -e '.[local]'" in str(info.value)


def test_ci_turns_the_skip_into_a_failure(
    extras: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPRO_REQUIRE_EXTRAS", "1")
    with pytest.raises(pytest.fail.Exception, match="OPRO_REQUIRE_EXTRAS is set"):
        extras(MISSING)


@pytest.mark.parametrize(("env", "outcome"), [(None, "skipped"), ("1", "errors")])
def test_the_marker_applies_the_helper_before_fixtures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: str | None, outcome: str
) -> None:
    if env is None:
        monkeypatch.delenv("OPRO_REQUIRE_EXTRAS", raising=False)
    else:
        monkeypatch.setenv("OPRO_REQUIRE_EXTRAS", env)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.fixture
        def needs_it():
            raise AssertionError("a fixture ran before the extra was checked")

        @pytest.mark.requires_extra("{MISSING}")
        def test_marked(needs_it):
            pass

        def test_unmarked():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio", "-rs")
    counts = {"passed": 1, outcome: 1}
    result.assert_outcomes(**counts)
    if env is None:
        result.stdout.fnmatch_lines([f"*needs the optional {MISSING}*"])


@pytest.mark.parametrize(
    ("env", "outcome"), [(None, pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_a_missing_program_skips_or_fails_under_ci(
    program: Callable[[str, str], str],
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    outcome: type[BaseException],
) -> None:
    if env is None:
        monkeypatch.delenv("OPRO_REQUIRE_EXTRAS", raising=False)
    else:
        monkeypatch.setenv("OPRO_REQUIRE_EXTRAS", env)
    with pytest.raises(outcome, match="needs the optional program opro-no-such-program: do X"):
        program("opro-no-such-program", "do X")


def test_a_present_program_gives_its_path(
    program: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPRO_REQUIRE_EXTRAS", "1")
    assert Path(program("sh", "apt-get install dash")).name == "sh"
