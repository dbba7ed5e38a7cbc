"""`--protocol ours|paper` and the options it decides, on `opro evaluate` and `opro optimize`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.main import build_parser, main
from opro.cli.optimize import configs, settings_from_args
from opro.cli.settings import Settings
from opro.optimize.metaprompt import MetaPromptConfig
from opro.optimize.protocol import protocol_preset
from opro.optimize.runlog import read_steps
from opro.testing.process import ServerProcess


def settings(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["optimize", *argv]))


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


def test_paper_sets_every_reference_setting() -> None:
    s = settings("--protocol", "paper", "--task", "bbh/navigate", "--scorer", "openai/gpt-4o")
    assert (s["protocol"], s["max_tokens"], s["grading"]) == ("paper", 1024, "reference")
    cfg, meta = configs(s)
    assert cfg.protocol == "paper" and meta == protocol_preset("paper").meta
    assert (cfg.steps, cfg.candidates_per_step, cfg.temperature) == (200, 8, 1.0)


def test_ours_is_the_default() -> None:
    s = settings("--task", "bbh/navigate", "--scorer", "openai/gpt-4o")
    assert (s["protocol"], s["max_tokens"], s["grading"]) == ("ours", None, "strict")
    cfg, meta = configs(s)
    assert cfg.protocol == "ours" and meta == MetaPromptConfig() == protocol_preset("ours").meta


def test_flags_and_the_config_file_beat_the_protocol(tmp_path: Path) -> None:
    s = settings(
        "--protocol", "paper", "--min-score", "none", "--max-shown", "all",
        "--extraction", "lenient", "--max-tokens", "64", "--meta-prompt", "pretrained",
        "--exemplar-selection", "current_most_frequent",
    )  # fmt: skip
    _, meta = configs(s)
    assert (meta.min_score, meta.max_shown, meta.extraction, s["max_tokens"]) == (
        None,
        None,
        "lenient",
        64,
    )
    assert (meta.style, meta.exemplar_selection) == ("pretrained", "current_most_frequent")
    toml = tmp_path / "run.toml"
    toml.write_text('protocol = "paper"\nmin-score = 0.5\nmax-shown = "auto"\n')
    _, meta = configs(settings("--config", str(toml), "--max-shown", "7"))
    assert (meta.min_score, meta.max_shown, meta.extraction) == (0.5, 7, "reference")
    toml.write_text('protocol = "paper"\nmin-score = "none"\n')
    assert configs(settings("--config", str(toml)))[1].min_score is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--min-score", "nan"], "must be a finite number"),
        (["--min-score", "inf"], "must be a finite number"),
        (["--min-score", "high"], "must be a finite number"),
        (["--max-shown", "0"], "must be an integer from 1 to"),
        (["--max-shown", "lots"], "must be an integer from 1 to"),
        (["--protocol", "theirs"], "invalid choice: 'theirs'"),
        (["--exemplar-selection", "hardest"], "invalid choice: 'hardest'"),
        (["--extraction", "greedy"], "invalid choice: 'greedy'"),
    ],
)
def test_bad_values_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["optimize", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("task", "extra", "tokens"),
    [
        ("bbh/navigate", [], 1024),  # the paper's tasks: the reference's 1024
        ("gsm8k", [], 1024),
        ("synthetic/arithmetic", [], 256),
        ("synthetic/arithmetic", ["--protocol", "paper"], 1024),
        ("bbh/navigate", ["--max-tokens", "100"], 100),
        ("bbh/navigate", ["--protocol", "paper", "--max-tokens", "100"], 100),
    ],
)
def test_scorer_max_tokens(
    task: str,
    extra: list[str],
    tokens: int,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["evaluate", "--task", task, "--data-dir", str(data_dir), "--limit", "3"]
    argv += ["--instruction", "x", "--scorer", "simulated/x", "--dry-run", "--no-cache", *extra]
    assert main(argv) == 0
    assert f"at most {3 * tokens} output tokens" in capsys.readouterr().out


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    yield srv
    srv.close()


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"input": f"Is {i} odd?", "target": str(i % 2 == 1)} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("extra", "framed"),
    [
        ([], False),
        (["--protocol", "paper"], False),
        (["--qa"], True),
        (["--protocol", "paper", "--qa"], True),
        (["--position", "A_begin"], True),  # it has no meaning without the framing
    ],
)
def test_framing_is_off_unless_asked_or_needed(
    extra: list[str], framed: bool, server: ServerProcess, jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    argv = ["evaluate", "--task", str(jsonl), "--scorer", "openai/fake-model"]
    argv += ["--scorer-base-url", server.base_url, "--instruction", "Be brief.", "--no-cache"]
    assert main([*argv, "--out", str(out), *extra]) == 0
    prompts = list(server.stats(prompts=True)["prompt_counts"])
    assert len(prompts) == 3
    assert all(
        p.startswith("Q: ") == framed and p.endswith("A: Be brief.") == ("A_begin" in extra)
        for p in prompts
    )
    if not framed:
        assert all(p.startswith("Be brief.\nIs ") for p in prompts)
    report = json.loads(out.read_text())
    assert report["protocol"] == ("paper" if "paper" in extra else "ours")


def test_qa_and_no_qa_contradict(jsonl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--task", str(jsonl), "--scorer", "simulated/x", "--no-cache"]
    assert main([*argv, "--instruction", "x", "--qa", "--no-qa"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--qa and --no-qa contradict" in err


@pytest.mark.parametrize(("protocol", "failures"), [("ours", 0), ("paper", 2)])
def test_optimize_under_each_protocol(
    protocol: str, failures: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The simulated optimizer answers like a scorer ("The answer is True."): no brackets, so
    # the paper's extraction finds nothing (counted, never scored) and ours takes it whole.
    run = tmp_path / "run"
    argv = [
        "optimize", "--task", "synthetic/boolean_expressions", "--scorer", "simulated/s",
        "--optimizer", "simulated/o", "--steps", "2", "--candidates-per-step", "2",
        "--run-dir", str(run), "--no-cache", "--test-top", "0", "--protocol", protocol,
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    stored = json.loads((run / "config.json").read_text())["run"]
    meta = stored["options"]["meta"]
    assert stored["options"]["protocol"] == protocol
    assert stored["problem"]["qa_framing"] is False
    if protocol == "paper":
        assert stored["problem"]["scorer_decoding"]["max_tokens"] == 1024
        assert (meta["style"], meta["min_score"], meta["max_shown"]) == (
            "instruction-tuned",
            0.0,
            20,
        )
        assert meta["extraction"] == "reference"
    else:
        assert stored["problem"]["scorer_decoding"]["max_tokens"] == 256
        assert (meta["style"], meta["min_score"], meta["extraction"]) == (
            "instruction-tuned",
            None,
            "lenient",
        )
    steps = read_steps(run / "steps.jsonl")[0]
    assert [r.get("extraction_failures") for r in steps] == [None, failures, failures]
    summary = (run / "summary.txt").read_text()
    assert f"protocol: {protocol}" in summary
    assert f"extraction failures: {2 * failures} of 4 optimizer answers" in summary
    scored_after_start = [c for r in steps[1:] for c in r["candidates"] if c["status"] == "new"]
    assert (len(scored_after_start) == 0) == (protocol == "paper")
