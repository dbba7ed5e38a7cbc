"""`opro optimize` end to end over real HTTP: scorer and optimizer both on a fake server.

The fake server runs in a subprocess (this file is its entry point: `python <this file>`),
with a responder that plays both roles: meta-prompts get bracketed instructions that depend
only on how many earlier instructions the meta-prompt lists; scorer prompts ("Is N even?")
are answered right or wrong depending on the words of the instruction in them. With
`--hang-in-step-2` the server lets the third scorer answer of step 2 through and then holds
the next request forever, so the optimize process can be killed at a known point mid-step
with no answered-but-unrecorded request in flight (the client uses one connection slot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import opro
from opro.cli.main import main
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, serve_until_signalled
from opro.testing.process import ServerProcess

POOL = [
    "Use parity rules.",
    "Think carefully.",
    "Look at the last figure.",
    "Decide quickly.",
    "Check the parity of the number.",
    "Answer yes or no.",
    "Consider the number carefully.",
    "Be brief.",
    "Recall what even means.",
    "Halve the number carefully.",
    "Trust your instinct.",
    "Count in pairs.",
]
META_MARK = "Write the text in square brackets."
_QUESTION = re.compile(r"Is (\d+) even\?")


def answer(prompt: str) -> str:
    """The fake models: an optimizer for meta-prompts, a parity scorer for the rest."""
    if META_MARK in prompt:
        k = prompt.count("text:\n")
        a, b = POOL[(2 * k) % len(POOL)], POOL[(2 * k + 1) % len(POOL)]
        return f"Here are three: [{a}] [{b}] [Think carefully.]"
    match = _QUESTION.search(prompt)
    if match is None:
        return "I do not know."
    n = int(match.group(1))
    right = "Yes" if n % 2 == 0 else "No"
    if "parity" in prompt or ("carefully" in prompt and n % 3):
        return f"The answer is {right}."
    return "The answer is Yes."


async def serve(argv: list[str]) -> int:
    """Entry point of the server subprocess; prints READY <base_url> like fake_openai."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang-in-step-2", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(FakeServerConfig(latency_s=args.latency))
    metas = scored_after = 0
    fired = not args.hang_in_step_2

    def responder(prompt: str) -> str:
        nonlocal metas, scored_after, fired
        if META_MARK in prompt:
            metas += 1
        elif metas >= 2 and not fired:
            scored_after += 1
            if scored_after == 3:
                fired = True
                server.inject("hang", 1)  # the next request is never answered
        return answer(prompt)

    server.config.responder = responder
    return await serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(sys.argv[1:])))


# -- tests ---------------------------------------------------------------------------------


class Server(ServerProcess):
    """This file run as a script is the server (its responder proposes instructions)."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args, command=[sys.executable, __file__])


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def task(tmp_path: Path) -> Path:
    path = tmp_path / "parity.jsonl"
    rows = [{"input": f"Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def optimize_args(task: Path, base_url: str, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "optimize",
        "--task", str(task),
        "--scorer", "openai/fake-model",
        "--scorer-base-url", base_url,
        "--optimizer", "openai/fake-model",
        "--optimizer-base-url", base_url,
        "--train-fraction", "0.4",
        "--validation-fraction", "0.2",
        "--eval-every", "2",
        "--steps", "4",
        "--candidates-per-step", "3",
        "--max-concurrency", "1",
        "--run-dir", str(run_dir),
        "--cache-dir", str(cache),
        *extra,
    ]  # fmt: skip


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


VOLATILE = {"wall_s", "calls", "cache_hits", "tokens_in", "tokens_out", "cost_usd", "totals"}


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE | {"info"}}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def test_a_full_run_through_the_cli(
    server: Server, task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = main(optimize_args(task, server.base_url, run_dir, tmp_path / "cache"))
    out, err = capsys.readouterr()
    assert code == 0, err
    records = lines(run_dir / "steps.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in records if r["validation"]] == [0, 2, 4]
    statuses = {c["status"] for r in records[1:] for c in r["candidates"]}
    assert statuses == {"new", "duplicate"}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best"]["solution"] in {"Use parity rules.", "Check the parity of the number."}
    assert results["best"]["score"] == 1.0
    roles = [row["role"] for row in results["final"]]
    assert roles[:3] == ["top 1", "top 2", "top 3"] and roles[-2:] == ["start", "baseline"]
    assert all(row["test"] is not None for row in results["final"])
    assert "top 1" in out and "run directory:" in out
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(progress) == 5 and "best train 100.0%" in progress[-1]
    assert "cache hits" in progress[-1] and "errors 0" in progress[-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["problem"]["scorer"]["spec"] == "openai/fake-model"
    assert "key" not in json.dumps(config).lower()
    # Every prompt was answered once: duplicates and repeated baselines were never re-sent.
    assert server.stats()["max_answers_per_prompt"] == 1


def test_a_toml_config_with_flags_on_top(
    server: Server, task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'task = "{task}"\nscorer = "openai/fake-model"\nscorer-base-url = "{server.base_url}"\n'
        f'optimizer = "openai/fake-model"\noptimizer_base_url = "{server.base_url}"\n'
        'steps = 5\ncandidates-per-step = 2\nstart = ["Be brief."]\nno-qa = true\n'
        "test-top = 1\n"
    )
    run_dir = tmp_path / "run"
    code = main(
        ["optimize", "--config", str(config), "--steps", "1", "--run-dir", str(run_dir),
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    stored = json.loads((run_dir / "config.json").read_text())["run"]
    assert stored["options"]["steps"] == 1  # the flag beat the file
    assert stored["options"]["candidates_per_step"] == 2
    assert (
        stored["problem"]["starting"] == ["Be brief."] and stored["problem"]["qa_framing"] is False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "x.jsonl", "--scorer", "simulated/a"], "x.jsonl"),
        (["--optimizer", "simulated/a", "--scorer", "simulated/a"], "give a task"),
        (["--task", "synthetic/arithmetic", "--scorer", "nobody/b"], "unknown provider 'nobody'"),
        (["--config", "/nonexistent/run.toml"], "cannot read config file"),
        (["--resume", "--task", "t", "--scorer", "s/a", "--optimizer", "s/b"], "--resume needs"),
        (["--steps", "-1"], "argument --steps: must be an integer from 0"),
        (["--meta-prompt", "chatty"], "invalid choice: 'chatty'"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["optimize", *args])
    except SystemExit as exc:  # argparse's own errors exit
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(("opro: error: ", "opro optimize: error: ")) and message in err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("steps = [", "is not valid TOML"),
        ("stepz = 3", "unknown setting 'stepz'"),
        ("steps = 'many'", "steps: must be an integer from 0"),
        ("order = 'sideways'", "order must be one of ascending, descending, random"),
        ("no-qa = 1", "no-qa must be true or false"),
        ("[steps]\nx = 1", "steps must be a value, not a table"),
    ],
)
def test_bad_config_files_are_one_line(
    tmp_path: Path, toml: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml + "\n")
    assert main(["optimize", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("opro: error:") and message in err


def test_resume_with_other_settings_is_refused_in_one_line(
    tmp_path: Path, task: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "optimize", "--task", str(task), "--scorer", "simulated/a", "--optimizer", "simulated/b",
        "--steps", "1", "--run-dir", str(tmp_path / "run"), "--no-cache",
    ]  # fmt: skip
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--resume", "--position", "Q_end"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"opro: error: cannot resume {tmp_path / 'run'}: problem.position was 'Q_begin' there "
        "but is 'Q_end' now; use the run's settings or a new --run-dir\n"
    )
    assert main(base) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def wait_for(condition: Callable[[], bool], what: str, tries: int = 2000) -> None:
    """Poll `condition` a bounded number of times (a correctness wait, not a timing test)."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def run_cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "opro.cli.main", *args], stdout=fh, stderr=subprocess.STDOUT
        )


def stored(cache: Path) -> int:
    """Results in a cache directory, as another process sees them."""
    try:
        with contextlib.closing(sqlite3.connect(cache / "cache.db")) as db:
            return int(db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def test_sigkill_mid_step_then_resume_pays_nothing_twice(task: Path, tmp_path: Path) -> None:
    server = Server("--hang-in-step-2")
    try:
        run_dir, cache = tmp_path / "killed", tmp_path / "cache"
        args = optimize_args(task, server.base_url, run_dir, cache)
        victim = run_cli(args, tmp_path / "victim.log")
        steps = run_dir / "steps.jsonl"
        wait_for(lambda: len(lines(steps)) >= 2, "two logged steps")

        def stalled() -> bool:
            held = server.stats()["errors_by_kind"].get("hang") == 1
            return held or victim.poll() is not None

        wait_for(stalled, "the held request")
        # A kill -9 loses the results still queued for the cache's writer thread (about the
        # last 50 ms): kill once the cache holds every answer the server gave.
        wait_for(lambda: stored(cache) >= server.stats()["accepted"], "the answers stored")
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        killed_at = lines(steps)
        assert [r["step"] for r in killed_at] == [0, 1]  # killed inside step 2
        paid_before = server.stats()["accepted"]

        resumed = run_cli([*args, "--resume"], tmp_path / "resumed.log")
        assert resumed.wait(timeout=120) == 0, (tmp_path / "resumed.log").read_text()
        counts = server.stats(prompts=True)["prompt_counts"]
        twice = {p: c for p, c in counts.items() if c > 1}
        assert not twice, f"answered more than once: {list(twice)[:3]}"
        resumed_paid = server.stats()["accepted"] - paid_before

        # The same run, uninterrupted, with its own cache.
        server.reset()
        straight = run_cli(
            optimize_args(task, server.base_url, tmp_path / "straight", tmp_path / "cache2"),
            tmp_path / "straight.log",
        )
        assert straight.wait(timeout=120) == 0, (tmp_path / "straight.log").read_text()
        straight_paid = server.stats()["accepted"]
    finally:
        server.close()
    a = json.loads((run_dir / "results.json").read_text())
    b = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert stable(a) == stable(b)
    assert stable(lines(run_dir / "steps.jsonl")) == stable(
        lines(tmp_path / "straight" / "steps.jsonl")
    )
    # Before the kill the server answered some of step 2; the resumed run paid only the rest.
    assert paid_before + resumed_paid == straight_paid
    assert 0 < resumed_paid < straight_paid


def simulated_args(task: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "optimize", "--task", str(task), "--scorer", "simulated/a", "--optimizer", "simulated/b",
        "--steps", "2", "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"),
        *extra,
    ]  # fmt: skip


def test_a_budget_stop_can_be_resumed(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Step 0 fits; step 1's optimizer call (worst case: meta-prompt + 8 x 512 tokens) does not.
    assert main(simulated_args(task, tmp_path, "--budget-tokens", "3000")) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("opro: stopped by the budget; the completed steps")
    assert "--resume" in err and "Traceback" not in err
    assert [r["step"] for r in lines(tmp_path / "run" / "steps.jsonl")] == [0]
    assert main([*simulated_args(task, tmp_path), "--resume"]) == 0
    assert [r["step"] for r in lines(tmp_path / "run" / "steps.jsonl")] == [0, 1, 2]


def test_an_unreachable_optimizer_is_one_line(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = simulated_args(task, tmp_path, "--max-attempts", "1", "--timeout", "5")
    args[args.index("simulated/b")] = "openai/fake-model"
    code = main([*args, "--optimizer-base-url", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    *progress, last = err.splitlines()
    assert progress == [line for line in progress if line.startswith("step 0/2")]
    assert last.startswith("opro: error: the optimizer model failed:")


def test_user_errors_are_one_line_under_python_m_too(tmp_path: Path) -> None:
    # Under `python -m` the CLI module is `__main__`: its errors must still be caught.
    result = subprocess.run(
        [sys.executable, "-m", "opro.cli.main", "optimize", "--scorer", "s/a"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("opro: error: give a task")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("seed", range(3))
def test_kill_9_at_seeded_random_moments_then_resume(task: Path, tmp_path: Path, seed: int) -> None:
    """Kill `opro optimize` after a random number of answers, resume, compare, count re-sends."""
    rng = random.Random(seed)
    with Server("--latency", "0.01") as srv:
        straight = tmp_path / "straight"
        args = optimize_args(
            task, srv.base_url, straight, tmp_path / "cache0", "--max-concurrency", "4"
        )
        assert main(args) == 0
        total = srv.stats()["accepted"]
        srv.reset()

        run_dir, cache = tmp_path / "run", tmp_path / "cache"
        cmd = [
            sys.executable,
            "-m",
            "opro.cli.main",
            *optimize_args(task, srv.base_url, run_dir, cache, "--max-concurrency", "4"),
        ]
        kill_at = rng.randint(1, total - 1)
        victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(4000):  # bounded wait for the kill point, polled not slept-for
            if srv.stats()["accepted"] >= kill_at or victim.poll() is not None:
                break
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        before = srv.stats(prompts=True)["prompt_counts"]
        recorded = asyncio.run(_cached_scorer_prompts(cache, srv.base_url, set(before)))

        resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        after = srv.stats(prompts=True)["prompt_counts"]
        resent = {p for p, c in after.items() if c > before.get(p, 0) and p in before}
        assert not resent & recorded, "a scorer answer that was recorded was paid for again"

    a = json.loads((straight / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert a["best"] == b["best"] and a["final"] == b["final"]
    assert a["solutions"] == b["solutions"]


async def _cached_scorer_prompts(cache_dir: Path, base_url: str, prompts: set[str]) -> set[str]:
    """The scorer prompts among `prompts` whose answers the cache holds."""
    async with opro.Engine(cache_dir=cache_dir) as engine:
        scorer = engine.model("openai/fake-model", base_url=base_url)
        return {
            p
            for p in prompts
            if META_MARK not in p and scorer.lookup(scorer.key(scorer.request(p))) is not None
        }
