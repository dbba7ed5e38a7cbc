"""Typed settings: defaults, then a TOML file, then flags, and errors that name the source."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from opro.checks import STEPS
from opro.cli.main import build_parser, main
from opro.cli.optimize import configs, settings_from_args
from opro.cli.settings import Option, OptionGroup, UsageError, resolve

CLI = Path(__file__).resolve().parents[1] / "cli"
TASK = "synthetic/boolean_expressions"
SIMULATED = ["--scorer", "simulated/s", "--optimizer", "simulated/o", "--no-cache"]


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    return line


@pytest.mark.parametrize("given_in", ["flag", "file"])
def test_a_bad_combination_names_where_each_value_came_from(
    given_in: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["optimize", "--task", TASK, *SIMULATED, "--run-dir", str(run)]
    if given_in == "flag":
        argv += ["--patience", "2"]
        where = "--patience"
    else:
        config = tmp_path / "run.toml"
        config.write_text("patience = 2\n")
        argv += ["--config", str(config)]
        where = f"{config}: patience"
    line = one_error_line(argv, capsys)
    assert line == (
        f"opro: error: {where} needs validation examples: set --validation-fraction above 0"
    )
    assert not run.exists()


def test_a_file_value_and_a_flag_that_contradict_are_both_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input": "Is 1 odd?", "target": "True"}) + "\n")
    config = tmp_path / "eval.toml"
    config.write_text(f'task = "{data}"\ninstruction = ["x"]\nscorer = "simulated/x"\nqa = true\n')
    line = one_error_line(["evaluate", "--config", str(config), "--no-qa", "--no-cache"], capsys)
    assert line == (
        f"opro: error: {config}: qa and --no-qa contradict each other: give one of them"
    )


def test_resume_from_a_file_without_a_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'task = "{TASK}"\nresume = true\n')
    line = one_error_line(["optimize", "--config", str(config)], capsys)
    assert line.startswith(f"opro: error: {config}: resume needs the --run-dir")


def test_a_bad_number_is_refused_by_the_same_range_from_either_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text("steps = -1\n")
    line = one_error_line(["optimize", "--config", str(config)], capsys)
    assert line == f"opro: error: {config}: steps: must be {STEPS.describe()}, got -1"
    with pytest.raises(SystemExit):
        main(["optimize", "--steps", "-1"])
    flag_line = capsys.readouterr().err.strip()
    assert f"argument --steps: must be {STEPS.describe()}, got -1" in flag_line


def test_evaluate_reads_a_config_file_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"input": f"Is {i} odd?", "target": "True"}) + "\n"
                            for i in range(3)))  # fmt: skip
    config = tmp_path / "eval.toml"
    config.write_text(
        f'task = "{data}"\ninstruction = ["A", "B"]\nscorer = "simulated/x"\nno-cache = true\n'
    )
    assert main(["evaluate", "--config", str(config), "--instruction", "C"]) == 0
    out = capsys.readouterr().out
    assert "'C'" in out and "'A'" not in out  # the flag replaced the file's list
    assert "pairs=3 calls=3" in out


def test_score_buckets_none_means_raw_scores(tmp_path: Path) -> None:
    """`--score-buckets none` used to be read as "not given" and shown as percentages."""
    run = tmp_path / "run"
    argv = ["optimize", "--task", TASK, *SIMULATED, "--steps", "1", "--test-top", "0"]
    assert main([*argv, "--candidates-per-step", "1", "--score-buckets", "none",
                 "--run-dir", str(run)]) == 0  # fmt: skip
    stored = json.loads((run / "config.json").read_text())["run"]["options"]["meta"]
    assert stored["score_buckets"] is None
    config = tmp_path / "run.toml"
    config.write_text('score-buckets = "none"\n')
    s = settings_from_args(build_parser().parse_args(["optimize", "--config", str(config)]))
    assert configs(s)[1].score_buckets is None
    default = settings_from_args(build_parser().parse_args(["optimize"]))
    assert configs(default)[1].score_buckets == 100


GROUP = OptionGroup(
    "test",
    (
        Option("--steps", "n", type=STEPS, default=200),
        Option("--cache-dir", "dir"),
        Option("--no-cache", "off", kind="switch"),
        Option("--stop", "repeat", kind="append"),
    ),
    exclusive=(("--cache-dir", "--no-cache"),),
)


def resolved(tmp_path: Path, toml: str, *flags: str) -> tuple[dict[str, object], list[str]]:
    import argparse

    from opro.cli.settings import add_groups

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_groups(parser, [GROUP])
    config = tmp_path / "t.toml"
    config.write_text(toml)
    s = resolve([GROUP], parser.parse_args(["--config", str(config), *flags]), command="test")
    dests = ["steps", "cache_dir", "no_cache", "stop"]
    return {d: s[d] for d in dests}, [s.where(d) for d in dests]


def test_layers_and_sources(tmp_path: Path) -> None:
    values, where = resolved(tmp_path, 'cache-dir = "c"\nstop = "x"\n', "--steps", "5")
    assert values == {"steps": 5, "cache_dir": "c", "no_cache": False, "stop": ["x"]}
    assert where == ["--steps", f"{tmp_path / 't.toml'}: cache-dir", "--no-cache",
                     f"{tmp_path / 't.toml'}: stop"]  # fmt: skip
    # A flag replaces the file's value of an option it excludes.
    values, _ = resolved(tmp_path, "no-cache = true\n", "--cache-dir", "d")
    assert (values["cache_dir"], values["no_cache"]) == ("d", False)
    with pytest.raises(UsageError, match="cache-dir and no-cache exclude each other"):
        resolved(tmp_path, 'cache-dir = "c"\nno-cache = true\n')


def test_no_argparse_internals_in_the_command_line_code() -> None:
    """Layering used `p._actions`, `argparse._AppendAction` and the parser in the namespace."""
    for path in CLI.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\._actions\b|argparse\._|_DEFAULTS_KEY|set_defaults", text), path
