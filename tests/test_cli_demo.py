"""`opro demo linreg|tsp` end to end: the optimizer is the fake OpenAI server, over real HTTP.

The server runs on its own event loop in a thread (the CLI runs `asyncio.run` itself). Its
responder reads each meta-prompt like an optimizer would and plays a scripted optimizer:
for linear regression it recognizes the run by its starting pairs, proposes far-away pairs
for K - 1 steps and then the optimum; for TSP it solves the listed points by brute force and
proposes non-optimal tours for K - 1 steps, then an optimal one. So the tables' numbers are
known in advance.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from opro.cli.main import main
from opro.optimize.runlog import read_steps
from opro.problems.linreg import LinearRegressionProblem, format_pair, loss, make_data
from opro.problems.tsp import make_instance, reference
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

Responder = Callable[[str], str]
T = TypeVar("T")


class ThreadServer:
    """A fake OpenAI server on a private loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = FakeOpenAIServer(FakeServerConfig())
        self.base_url = self._wait(self.server.start())

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def respond(self, responder: Responder) -> None:
        self.server.config.responder = responder

    def close(self) -> None:
        self._wait(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    srv = ThreadServer()
    yield srv
    srv.close()


def demo(kind: str, server: ThreadServer, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "demo", kind,
        "--optimizer", "openai-compatible/fake-model",
        "--optimizer-base-url", server.base_url,
        "--run-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "cache"),
        *extra,
    ]  # fmt: skip


# -- linear regression ------------------------------------------------------------------------

_ENTRY = re.compile(r"pair: w=(-?\d+), b=(-?\d+)\nvalue: (-?\d+)")
STEPS_TO_FIND = {(15, 14): 2, (3, 5): 4}


def linreg_responder(runs: int) -> Responder:
    """Recognizes a run by its starting pairs (in [10, 20]^2; the far pairs are never there)."""
    known: dict[frozenset[tuple[int, int, int]], tuple[tuple[int, int], int]] = {}
    for setting, k in STEPS_TO_FIND.items():
        for r in range(runs):
            problem = LinearRegressionProblem(
                make_data(*setting, seed=(0, r, 0)), start_seed=(0, r, 1)
            )
            starts = frozenset((w, b, round(loss(problem.data, w, b))) for w, b in problem.starts)
            known[starts] = (problem.optimum, k)

    def respond(prompt: str) -> str:
        entries = [(int(w), int(b), int(v)) for w, b, v in _ENTRY.findall(prompt)]
        starts = frozenset(e for e in entries if 10 <= e[0] <= 20 and 10 <= e[1] <= 20)
        optimum, k = known[starts]
        far = sum(e[0] >= 1000 for e in entries)
        if far == k - 1:
            return f"The best so far is w={entries[-1][0]}, b={entries[-1][1]}; try {optimum}."
        return f"Let me explore.\n\n[w, b] = [{1000 + far}, 0]"

    return respond


def test_linreg_table_and_run_directories(
    server: ThreadServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.respond(linreg_responder(runs=2))
    args = demo("linreg", server, tmp_path, "--settings", "15,14", "3,5", "--runs", "2")
    assert main([*args, "--steps", "10"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+-?\d+\s+-?\d+\s", line)]
    # Steps K, unique pairs = 5 starts + K proposals, every run solved.
    assert rows == [
        ["15", "14", "2.0", "+-", "0.0", "7.0", "+-", "0.0", "2/2"],
        ["3", "5", "4.0", "+-", "0.0", "9.0", "+-", "0.0", "2/2"],
    ]
    assert err.count("solved after") == 4
    root = tmp_path / "runs"
    assert (root / "table.txt").read_text() in out
    table = json.loads((root / "table.json").read_text())
    assert [r["steps"] for r in table["runs"]] == [2, 2, 4, 4]
    run = root / "w3_b5" / "run1"
    for name in ("config.json", "steps.jsonl", "results.json", "summary.txt"):
        assert (run / name).is_file()
    results = json.loads((run / "results.json").read_text())
    problem = LinearRegressionProblem(make_data(3, 5, seed=(0, 1, 0)), start_seed=(0, 1, 1))
    assert results["best"]["solution"] == format_pair(*problem.optimum)
    assert results["steps_completed"] == 4
    # Each step asked once for eight answers at temperature 1 (all alike here: one new pair).
    body = server.server.last_body
    assert body["n"] == 8 and body["temperature"] == 1.0
    assert server.server.accepted == 2 * (2 + 4)

    # The same command again refuses to overwrite; --resume finishes at once, calling nothing.
    assert main([*args, "--steps", "10"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main([*args, "--steps", "10", "--resume"]) == 0
    assert server.server.accepted == 12
    assert "2.0 +- 0.0" in capsys.readouterr().out


def test_linreg_step_cap(
    server: ThreadServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.respond(linreg_responder(runs=1))
    args = demo("linreg", server, tmp_path, "--settings", "3,5", "--runs", "1", "--steps", "2")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"\s3\s+5\s+-\s+-\s+0/1", out), out


def test_the_budget_is_the_total_of_all_runs_over_all_sessions(
    server: ThreadServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.respond(linreg_responder(runs=2))
    args = demo(
        "linreg", server, tmp_path, "--settings", "15,14", "3,5", "--runs", "2",
        "--steps", "10", "--optimizer-max-tokens", "32", "--budget-tokens", "1300",
    )  # fmt: skip
    fake = server.server
    ends = []
    for session in range(3):  # the same cap, resumed: it is the runs' total, not a session's
        ends.append((main(args + ["--resume"] * (session > 0)), capsys.readouterr().err))
        assert fake.billed_prompt_tokens + fake.billed_completion_tokens <= 1300
    for code, err in ends:
        assert code == 3
        assert "of 1300 tokens cap; resume with a higher --budget-tokens to continue" in err
    ledger = json.loads((tmp_path / "runs" / "spend.json").read_text())
    assert ledger["settled"]["tokens_in"] == fake.billed_prompt_tokens
    assert ledger["settled"]["tokens_out"] == fake.billed_completion_tokens


# -- TSP --------------------------------------------------------------------------------------

_POINT = re.compile(r"\((\d+)\): \((-?\d+), (-?\d+)\)")
_SHOWN = re.compile(r"<trace>([\d,]+)</trace>")
TSP_STEPS = 2


def tsp_responder(prompt: str) -> str:
    points = [(int(x), int(y)) for _, x, y in _POINT.findall(prompt)]
    shown = set(_SHOWN.findall(prompt))

    def length(tour: tuple[int, ...]) -> float:
        return sum(
            math.dist(points[a], points[b]) for a, b in zip(tour, (*tour[1:], 0), strict=True)
        )

    tours = sorted(
        (length((0, *rest)), (0, *rest)) for rest in itertools.permutations(range(1, len(points)))
    )
    best = tours[0][0]
    if len(shown) - 5 == TSP_STEPS - 1:
        return f"A shorter one:\n<trace>{','.join(map(str, tours[0][1]))}</trace>"
    fresh = next(t for d, t in tours if d > best + 1e-6 and ",".join(map(str, t)) not in shown)
    return f"<trace>{','.join(map(str, fresh))}</trace>"


def two_runs(values: list[float]) -> str:
    """Mean +- population std of two values, as the table prints them."""
    return f"{(values[0] + values[1]) / 2:.1f} +- {abs(values[0] - values[1]) / 2:.1f}"


@pytest.mark.requires_extra("ortools")
def test_tsp_table(
    server: ThreadServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.respond(tsp_responder)
    args = demo("tsp", server, tmp_path, "--n", "6", "7", "--instances", "2", "--steps", "6")
    assert main(args) == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines() if re.match(r"\s+[67]\s", line)}
    assert set(rows) == {"6", "7"}
    for n, line in rows.items():
        refs = [reference(make_instance(int(n), seed=(0, int(n), i))) for i in range(2)]
        nn = [r.gap(r.nn_length) for r in refs]
        fi = [r.gap(r.fi_length) for r in refs]
        fi_paper = [r.gap(r.fi_ref_length or 0.0) for r in refs]
        assert two_runs(nn) in line and two_runs(fi) in line and two_runs(fi_paper) in line
        assert "0.0 +- 0.0" in line and f"{TSP_STEPS}.0 +- 0.0 (2/2)" in line
        assert line.rstrip().endswith("0/32")  # 2 instances x 2 steps x 8 answers, none invalid
    assert "optimum" in err
    run = tmp_path / "runs" / "n7" / "instance1"
    assert json.loads((run / "results.json").read_text())["steps_completed"] == TSP_STEPS


@pytest.mark.requires_extra("ortools")
def test_tsp_baselines_need_no_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "tsp", "--baselines-only", "--n", "8", "--run-dir", str(tmp_path / "b")])
    assert code == 0
    out = capsys.readouterr().out
    assert "none (baselines only)" in out and "- (no runs)" in out
    table = json.loads((tmp_path / "b" / "table.json").read_text())
    refs = [reference(make_instance(8, seed=(0, 8, i))) for i in range(5)]
    assert table["rows"][0]["gaps"]["nn"] == pytest.approx([r.gap(r.nn_length) for r in refs])
    assert table["rows"][0]["gaps"]["fi"] == pytest.approx([r.gap(r.fi_length) for r in refs])
    paper = [r.gap(r.fi_ref_length or 0.0) for r in refs]
    assert table["rows"][0]["gaps"]["fi_ref"] == pytest.approx(paper)
    assert table["instances"][0]["farthest_insertion_ref"] == list(refs[0].farthest_insertion_ref)
    assert "FI-paper" in out and "FI-textbook" in out


@pytest.mark.parametrize(("flag", "asks"), [((), 1), (("--resample-invalid",), 5)])
def test_tsp_invalid_tours_are_counted_and_asking_again_is_bounded(
    flag: tuple[str, ...],
    asks: int,
    server: ThreadServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.respond(lambda prompt: "<trace>0,1,1,2</trace>")  # never a valid tour
    args = demo("tsp", server, tmp_path, "--n", "5", "--instances", "1", "--steps", "1", *flag)
    assert main(args) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if re.match(r"\s+5\s", line))
    assert row.rstrip().endswith(f"{8 * asks}/{8 * asks}")  # invalid / proposed
    assert server.server.requests_total == asks  # the first ask and at most four more
    records, _ = read_steps(tmp_path / "runs" / "n5" / "instance0" / "steps.jsonl")
    assert (records[1]["asks"], records[1]["invalid"]) == (asks, 8 * asks)


# -- user errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "linreg"], "give an optimizer model"),
        (["demo", "tsp", "--n", "10"], "give an optimizer model"),
        (["demo", "linreg", "--optimizer", "x/y", "--settings", "15"], "a setting is W,B"),
        (
            ["demo", "linreg", "--optimizer", "x/y", "--runs", "0"],
            "--runs: must be an integer from 1",
        ),
        (
            ["demo", "tsp", "--optimizer", "simulated/x", "--n", "3"],
            "--n: must be an integer from 5",
        ),
        (
            ["demo", "tsp", "--optimizer", "nope/x", "--n", "5", "--instances", "1"],
            "unknown provider",
        ),
        (
            ["demo", "linreg", "--optimizer", "simulated/x", "--resume"],
            "--resume needs the --run-dir",
        ),
        (["demo"], "required"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--n" in argv and "nope/x" in argv:
        argv = [*argv, "--run-dir", str(tmp_path / "r")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith("tsp n=")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err
