"""Reliability: restarts, error thresholds, kill -9 and resume, shared caches, secrets."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import opro
from opro.caches.disk import DiskCache
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.tasks import render_prompt
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig
from opro.testing.process import ServerProcess

EXAMPLES = [opro.Example(f"Is {i} even?", str(i % 2 == 0)) for i in range(40)]


class Grader:
    version = "t"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction.strip() == example.target


async def test_a_server_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    restart = asyncio.Event()
    answered = 0

    def responder(prompt: str) -> str:
        nonlocal answered
        answered += 1
        if answered == 10:
            restart.set()
        return "True"

    srv = FakeOpenAIServer(FakeServerConfig(responder=responder, latency_s=0.02))
    await srv.start()
    retry = opro.RetryPolicy(base_delay=0.05, max_delay=0.5, max_attempts=12)
    async with Engine(cache_dir=tmp_path, retry=retry) as engine:
        scorer = engine.model(
            "openai/fake", base_url=srv.base_url, limits=opro.LimitConfig(max_concurrency=8)
        )
        run = asyncio.create_task(engine.evaluate(["A"], EXAMPLES, scorer, grader=Grader()))
        await restart.wait()
        await srv.stop()  # in-flight requests are dropped, new ones are refused
        await srv.start()  # same port
        report = await run
    await srv.stop()
    score = report.instructions[0]
    assert (score.errors, score.n, score.correct) == (0, 40, 20)
    assert report.totals.calls > 40  # the dropped and refused attempts were retried


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        (ErrorPolicy(max_errors=3), "more than the 3 allowed"),
        (ErrorPolicy(max_error_rate=0.1, min_pairs=10), r"more than 10%"),
    ],
)
async def test_too_many_failed_pairs_abort_instead_of_scoring_partial_data(
    tmp_path: Path, policy: ErrorPolicy, match: str
) -> None:
    config = FakeServerConfig(fault_rates={"400": 0.5})
    async with FakeOpenAIServer(config) as srv, Engine(cache_dir=tmp_path) as engine:
        scorer = engine.model(
            "openai/fake", base_url=srv.base_url, limits=opro.LimitConfig(max_concurrency=1)
        )
        with pytest.raises(opro.EvaluationAborted, match=match):
            await engine.evaluate(["A"], EXAMPLES, scorer, grader=Grader(), errors=policy)


# -- processes -------------------------------------------------------------------------------


def write_task(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"input": f"Is {i} odd?", "target": str(i % 2 == 1)}) + "\n"
            for i in range(n)
        )
    )
    return path


def evaluate_cmd(task: Path, base_url: str, cache: Path, out: Path, *ins: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "opro.cli.main",
        "evaluate",
        "--task",
        str(task),
        "--scorer",
        "openai/fake-model",
        "--scorer-base-url",
        base_url,
        "--cache-dir",
        str(cache),
        "--out",
        str(out),
        "--max-concurrency",
        "4",
    ]
    for text in ins:
        cmd += ["--instruction", text]
    return cmd


def cached_prompts(cache_dir: Path, base_url: str, instructions: list[str], task: Path) -> set[str]:
    """The prompts whose answers the cache holds (rendered as the engine renders them)."""
    rows = [json.loads(line) for line in task.read_text().splitlines()]
    cache = DiskCache(cache_dir)
    found = set()

    async def keys() -> None:
        async with Engine(cache=cache) as engine:
            model = engine.model("openai/fake-model", base_url=base_url)
            for ins in instructions:
                for row in rows:
                    prompt = render_prompt(ins, row["input"])
                    if cache.get(model.key(model.request(prompt))) is not None:
                        found.add(prompt)

    asyncio.run(keys())
    return found


INSTRUCTIONS = ["", "Answer True or False."]


@pytest.mark.parametrize("seed", range(5))
def test_kill_9_at_random_moments_then_resume(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    task = write_task(tmp_path / "task.jsonl", 60)
    proc = ServerProcess("--latency", "0.02", "--jitter", "0.01")
    base_url = proc.base_url
    try:
        kill_at = rng.randint(1, 110)
        cache = tmp_path / "cache"
        victim = subprocess.Popen(
            evaluate_cmd(task, base_url, cache, tmp_path / "a.json", *INSTRUCTIONS),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2000):  # bounded wait for the kill point, polled not slept-for
            if proc.stats()["accepted"] >= kill_at or victim.poll() is not None:
                break
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        before = proc.stats(prompts=True)["prompt_counts"]
        recorded = cached_prompts(cache, base_url, INSTRUCTIONS, task)
        assert recorded <= set(before)

        resumed = subprocess.run(
            evaluate_cmd(task, base_url, cache, tmp_path / "b.json", *INSTRUCTIONS),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr
        after = proc.stats(prompts=True)["prompt_counts"]
        resent = {p for p, c in after.items() if c > before.get(p, 0) and p in before}
        assert not resent & recorded, "a request whose answer was recorded was sent again"
        assert len(after) == 120

        fresh = subprocess.run(
            evaluate_cmd(task, base_url, tmp_path / "cache2", tmp_path / "c.json", *INSTRUCTIONS),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert fresh.returncode == 0, fresh.stderr
        resumed_report = json.loads((tmp_path / "b.json").read_text())
        fresh_report = json.loads((tmp_path / "c.json").read_text())
        for a, b in zip(resumed_report["instructions"], fresh_report["instructions"], strict=True):
            assert (a["accuracy"], a["correct"], a["n"]) == (b["accuracy"], b["correct"], b["n"])
    finally:
        proc.close()


def test_two_processes_share_one_cache_directory(tmp_path: Path) -> None:
    task = write_task(tmp_path / "task.jsonl", 80)
    proc = ServerProcess("--latency", "0.005")
    base_url = proc.base_url
    try:
        cache = tmp_path / "shared-cache"
        a = subprocess.Popen(
            evaluate_cmd(task, base_url, cache, tmp_path / "a.json", "", "X"),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        b = subprocess.Popen(
            evaluate_cmd(task, base_url, cache, tmp_path / "b.json", "X", "Y"),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        _, err_a = a.communicate(timeout=120)
        _, err_b = b.communicate(timeout=120)
        assert a.returncode == 0, err_a
        assert b.returncode == 0, err_b
        c = subprocess.run(
            evaluate_cmd(task, base_url, cache, tmp_path / "c.json", "", "X", "Y"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert c.returncode == 0, c.stderr
        report = json.loads((tmp_path / "c.json").read_text())
        assert report["totals"]["calls"] == 0 and report["totals"]["cache_hits"] == 240
        assert len(DiskCache(cache)) == 240
    finally:
        proc.close()


def test_api_keys_never_reach_disk_or_output(tmp_path: Path) -> None:
    sentinel = "sk-SENTINEL-0123456789abcdef"
    task = write_task(tmp_path / "task.jsonl", 10)
    proc = ServerProcess("--api-key", sentinel)
    base_url = proc.base_url
    try:
        env = {**os.environ, "OPENAI_API_KEY": sentinel}
        ok = subprocess.run(
            evaluate_cmd(task, base_url, tmp_path / "cache", tmp_path / "r.json", "A"),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stderr
        optimized = subprocess.run(
            [
                sys.executable,
                "-m",
                "opro.cli.main",
                "optimize",
                "--task",
                str(task),
                "--scorer",
                "openai/fake-model",
                "--scorer-base-url",
                base_url,
                "--optimizer",
                "openai/fake-model",
                "--optimizer-base-url",
                base_url,
                "--steps",
                "1",
                "--candidates-per-step",
                "2",
                "--train-fraction",
                "0.5",
                "--run-dir",
                str(tmp_path / "run"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert optimized.returncode == 0, optimized.stderr
        assert (tmp_path / "run" / "steps.jsonl").exists()
        bad_env = {**os.environ, "OPENAI_API_KEY": sentinel + "-wrong"}
        bad = subprocess.run(
            evaluate_cmd(task, base_url, tmp_path / "cache", tmp_path / "r2.json", "B"),
            capture_output=True,
            text=True,
            env=bad_env,
            timeout=120,
        )
        assert bad.returncode != 0
        for text in (
            ok.stdout,
            ok.stderr,
            bad.stdout,
            bad.stderr,
            optimized.stdout,
            optimized.stderr,
        ):
            assert sentinel not in text
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert sentinel.encode() not in path.read_bytes(), path
    finally:
        proc.close()
