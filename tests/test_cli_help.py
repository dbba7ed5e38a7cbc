"""`opro --help`, every command's help and `opro --version`, as a new user reads them."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest

from opro.cli.help import source_version, version
from opro.cli.main import main

# command -> (its one line, the groups its options are shown in)
SHARED = ["task", "models", "engine limits", "cost", "cache"]
COMMANDS: dict[tuple[str, ...], tuple[str, list[str]]] = {
    ("evaluate",): (
        "Score instructions on a task",
        [*SHARED, "settings file", "instructions", "prompt and grading", "output"],
    ),
    ("optimize",): (
        "Search for a better instruction for a task with OPRO",
        [*SHARED, "run directory", "settings file", "optimizer loop", "meta-prompt"],
    ),
    ("demo", "linreg"): (
        "Find the integer (w, b) of least squared error",
        ["models", "engine limits", "cost", "cache", "run directory", "linear regression"],
    ),
    ("demo", "tsp"): (
        "Find the shortest tour through n points",
        ["models", "engine limits", "cost", "cache", "run directory", "traveling salesman"],
    ),
    ("demo",): ("The paper's math demos", []),
    ("tasks",): ("List the tasks --task accepts", []),
}


def help_of(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    out: str = capsys.readouterr().out
    return out


@pytest.mark.parametrize("path", list(COMMANDS))
def test_every_command_says_what_it_does_shows_an_example_and_groups_its_options(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(path, capsys)
    summary, groups = COMMANDS[path]
    description = text.split("\n\n")[1]
    assert description.startswith(summary), description
    examples = text.split("\nexamples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith("  ") for line in examples)
    assert examples[0].strip().startswith("opro " + " ".join(path))
    for group in groups:
        assert f"\n{group}:\n" in text, group
    assert "Namespace" not in text and "argparse" not in text


def test_options_show_units_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_of(("optimize",), capsys).split())  # unwrapped
    for fragment in (
        "--timeout SECONDS seconds one attempt may take (default: 120)",
        "--rpm PER_MINUTE requests per minute per connection",
        "--budget-usd USD hard cap on the cost in USD",
        "--price IN,OUT the scorer's price: USD per million input and output tokens",
        "--max-tokens TOKENS tokens the scorer may write per answer (default: 1024 on the",
        "--steps N optimization steps after step 0 (default: 200)",
        "--max-concurrency N calls in flight per connection (vendor account or server) "
        "(default: 32)",
        "--cache-dir DIR where answers are cached",
        "--run-dir DIR where the run is logged",
    ):
        assert fragment in text, fragment


def test_the_top_level_help_greets_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of((), capsys)
    assert text.split("\n\n")[1].startswith("opro: find a better instruction for an LLM task")
    assert "parse arguments" not in text and "asyncio" not in text
    for command in ("optimize", "evaluate", "demo", "tasks"):
        assert re.search(rf"^\s+{command}\s+\S", text, re.MULTILINE), command
    assert "\nexamples:\n  opro optimize --task synthetic/boolean_expressions" in text


def test_version_from_the_package_metadata_or_the_source() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opro.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout == f"opro {version()}\n"
    try:
        expected = metadata.version("opro-engine")
    except metadata.PackageNotFoundError:
        expected = source_version()
    assert version() == expected
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", source_version())


def test_without_metadata_the_source_version_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert version() == source_version() != "unknown"
