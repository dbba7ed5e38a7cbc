"""Sweeps on a real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`),
against the fake OpenAI server over loopback HTTP: a request rate shared by the nodes,
one budget across them, results and resume in the driver's sweep directory, and a worker
node removed mid-sweep.

The cluster is started once for the module (about 5-10 s); the node-loss test removes
the worker node, so it runs last.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from opro.caches.disk import DiskCache
from opro.cli.main import main
from opro.cluster import RayOptions, ray_sweep
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.retry import RetryPolicy
from opro.optimize.loop import OptimizeConfig
from opro.sweep import ModelSettings, ProblemSettings, SweepSettings, sweep
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

pytestmark = pytest.mark.requires_extra("ray")
# Read when Ray is imported: every node binds 127.0.0.1 (no other interface is used).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

META_MARK = "Write the text in square brackets."
POOL = ["Use parity rules.", "Think carefully.", "Be brief.", "Count in pairs."]
_QUESTION = re.compile(r"\[(\w+)\] Is (\d+) even\?")


def answer(prompt: str) -> str:
    """Optimizer for meta-prompts, a parity scorer (right only with 'parity') otherwise."""
    if META_MARK in prompt:
        k = prompt.count("text:\n")
        return f"[{POOL[(2 * k) % len(POOL)]}] [{POOL[(2 * k + 1) % len(POOL)]}]"
    match = _QUESTION.search(prompt)
    if match is None:
        return "I do not know."
    n = int(match.group(2))
    right = "Yes" if n % 2 == 0 else "No"
    return f"The answer is {right}." if "parity" in prompt else "The answer is Yes."


def write_task(path: Path, tag: str, n: int) -> str:
    rows = [
        {"input": f"[{tag}] Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def settings_for(tasks: list[str], base_url: str, steps: int = 2, **model: Any) -> SweepSettings:
    role = ModelSettings("openai/fake-model", base_url=base_url, **model)
    return SweepSettings(
        patterns=tuple(tasks),
        scorer=role,
        optimizer=role,
        optimize=OptimizeConfig(steps=steps, candidates_per_step=2, test_top=1),
        problem=ProblemSettings(train_fraction=0.5, test_limit=4),
        max_parallel_tasks=2,
    )


def repaid(server: FakeOpenAIServer) -> int:
    return sum(n - 1 for n in server.prompt_counts.values() if n > 1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimpleNamespace]:
    import ray
    from ray.cluster_utils import Cluster

    c: Any = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})  # partly typed
    # Connected before the second node exists, so the driver (and with it the bank and the
    # limiters) is on the head: both raylets share 127.0.0.1.
    ray.init(address=c.address, log_to_driver=False)
    worker = c.add_node(num_cpus=1)
    assert ray.get_runtime_context().get_node_id() == c.head_node.node_id
    try:
        yield SimpleNamespace(cluster=c, worker=worker)
    finally:
        ray.shutdown()
        c.shutdown()


async def run(
    tmp_path: Path,
    settings: SweepSettings,
    name: str,
    budget: Budget,
    *,
    on_ray: bool = True,
    resume: bool = False,
) -> Any:
    retry = RetryPolicy(base_delay=0.001, max_delay=0.01)
    cache = str(tmp_path / f"cache-{name}")  # one directory for every node (and the driver)
    async with Engine(cache_dir=cache, budget=budget, retry=retry) as engine:
        if not on_ray:
            return await sweep(engine, settings, run_dir=tmp_path / name, resume=resume)
        options = RayOptions(cache=cache, num_cpus=1)
        return await ray_sweep(
            engine, settings, run_dir=tmp_path / name, options=options, resume=resume
        )


async def test_two_nodes_share_one_rate_and_one_budget_and_resume_anywhere(
    cluster: SimpleNamespace, tmp_path: Path
) -> None:
    rpm = 1200
    sent: list[float] = []

    def responder(prompt: str) -> str:
        sent.append(asyncio.get_running_loop().time())
        return answer(prompt)

    tasks = [write_task(tmp_path / f"{t}.jsonl", t, n) for t, n in (("a", 20), ("b", 24))]
    async with FakeOpenAIServer(FakeServerConfig(rpm=rpm, responder=responder)) as server:
        settings = settings_for(tasks, server.base_url, rpm=rpm, max_tokens=16)
        whole = await run(tmp_path, settings, "whole", Budget())
        assert whole.complete, [(t.task, t.reason) for t in whole.tasks]
        assert len(set(whole.nodes.values())) == 2  # one task on each node
        # One rate for the cluster: each node alone would send at the full limit.
        assert server.n429 <= 0.01 * server.requests_total
        per_s = rpm / 60
        for start in sent:  # the server's bucket: one second's burst plus the rate
            assert sum(start <= t < start + 1.0 for t in sent) <= 2 * per_s
        t = whole.totals
        assert (t.calls, t.tokens_in, t.tokens_out) == (
            server.requests_total,
            server.billed_prompt_tokens,
            server.billed_completion_tokens,
        )
        for name in ("a.jsonl", "b.jsonl"):  # the run directories are the driver's
            run_dir = tmp_path / "whole" / name
            results = json.loads((run_dir / "results.json").read_text())
            assert results["steps_completed"] == 2 and results["final"]
            assert len((run_dir / "steps.jsonl").read_text().splitlines()) == 3  # steps 0-2
        total = server.billed_prompt_tokens + server.billed_completion_tokens
        server.reset_stats()

        cap = total // 2
        capped = await run(tmp_path, settings, "capped", Budget(max_tokens=cap))
        billed = server.billed_prompt_tokens + server.billed_completion_tokens
        assert capped.stopped == "budget" and not capped.complete
        assert billed <= cap  # the promise, across both nodes
        ledger = json.loads((tmp_path / "capped" / "spend.json").read_text())
        settled = ledger["settled"]["tokens_in"] + ledger["settled"]["tokens_out"]
        assert settled == billed  # the driver's spend.json says what the server billed

        # Resumed without Ray: from the driver's directory, paying nothing twice.
        more = await run(
            tmp_path, settings, "capped", Budget(max_tokens=2 * total), on_ray=False, resume=True
        )
        assert more.complete
        assert repaid(server) == 0
    for name in ("a.jsonl", "b.jsonl"):
        once = json.loads((tmp_path / "whole" / name / "results.json").read_text())
        resumed = json.loads((tmp_path / "capped" / name / "results.json").read_text())
        assert resumed["best"] == once["best"] and resumed["final"] == once["final"]


async def test_the_cli_evaluates_on_the_cluster_and_resumes_without_it(
    cluster: SimpleNamespace, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`opro sweep --ray auto --evaluate-only` (the simulated scorer, in each actor), then
    `--resume` with no cluster option: everything is already in the driver's directory."""
    run_dir = tmp_path / "sweep"
    too_big = ["sweep", "--tasks", "bbh/navigate", "--data-dir", str(data_dir)]
    too_big += ["--scorer", "simulated/s", "--run-dir", str(run_dir), "--ray", "auto"]
    assert await asyncio.to_thread(main, [*too_big, "--ray-cpus", "64"]) == 2
    assert "largest node of the cluster has 2" in capsys.readouterr().err
    assert not run_dir.exists()  # refused before anything was written
    args = ["sweep", "--evaluate-only", "--tasks", "bbh/navigate", "--tasks", "bbh/snarks"]
    args += ["--instruction", "Think.", "--instruction", "Be brief.", "--split", "train"]
    args += ["--scorer", "simulated/s", "--run-dir", str(run_dir), "--data-dir", str(data_dir)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--ray", "auto", "--ray-cpus", "1"]
    assert await asyncio.to_thread(main, args) == 0  # Ray is initialised: its cluster
    for task, train in (("bbh__navigate", 50), ("bbh__snarks", 35)):
        report = json.loads((run_dir / task / "report.json").read_text())
        assert [s["n"] for s in report["instructions"]] == [train, train]
    stored = json.loads((run_dir / "sweep.json").read_text())
    assert "ray" not in stored["info"]["cli"]  # where it ran is not a setting of the sweep
    resume = ["sweep", "--resume", "--run-dir", str(run_dir)]
    assert await asyncio.to_thread(main, resume) == 0
    again = json.loads((run_dir / "sweep.json").read_text())
    assert again["totals"]["calls"] == stored["totals"]["calls"] > 0  # nothing run twice


@pytest.mark.requires_extra("redis")
async def test_the_nodes_share_a_redis_cache_with_the_driver(
    cluster: SimpleNamespace, tmp_path: Path, data_dir: Path, redis_server: Any
) -> None:
    """`--cache redis://...` on a Ray sweep: every actor writes what it paid for into the one
    Redis, so the same evaluation afterwards, without Ray, is answered from it in full."""
    url = redis_server.url
    args = ["sweep", "--evaluate-only", "--tasks", "bbh/navigate", "--tasks", "bbh/snarks"]
    args += ["--instruction", "Redis shared.", "--split", "train", "--scorer", "simulated/s"]
    args += ["--data-dir", str(data_dir), "--cache", url]
    on_ray = [*args, "--run-dir", str(tmp_path / "ray"), "--ray", "auto", "--ray-cpus", "1"]
    assert await asyncio.to_thread(main, on_ray) == 0
    paid = json.loads((tmp_path / "ray" / "sweep.json").read_text())["totals"]
    assert paid["calls"] == 50 + 35 and paid["cache_hits"] == 0
    local = [*args, "--run-dir", str(tmp_path / "local")]
    assert await asyncio.to_thread(main, local) == 0
    again = json.loads((tmp_path / "local" / "sweep.json").read_text())["totals"]
    assert again["calls"] == 0 and again["cache_hits"] == 50 + 35


class GatedServer(FakeOpenAIServer):
    """Holds every request at a gate while `holding` is set."""

    def __init__(self, config: FakeServerConfig) -> None:
        super().__init__(config)
        self.holding = False
        self.held = 0
        self.gate = asyncio.Event()

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if self.holding:
            self.held += 1
            await self.gate.wait()
        return await super()._complete(request, chat)


async def test_a_worker_node_removed_mid_sweep_loses_nothing_paid_for(
    cluster: SimpleNamespace, tmp_path: Path
) -> None:
    """Runs last: it takes the worker node away for good. The server holds every new
    request once both tasks are under way; when every answer sent is in the shared cache,
    the worker node is removed, and the requests held are the calls in flight."""
    answered: dict[str, int] = {"a": 0, "b": 0}
    both_busy = asyncio.Event()

    def responder(prompt: str) -> str:
        match = _QUESTION.search(prompt)
        if match is not None:
            answered[match.group(1)] += 1
            if min(answered.values()) >= 20:
                both_busy.set()
        return answer(prompt)

    tasks = [write_task(tmp_path / f"{t}.jsonl", t, 60) for t in ("a", "b")]
    cache = DiskCache(tmp_path / "cache-lost")
    server = GatedServer(FakeServerConfig(latency_s=0.05, responder=responder))
    async with server:
        settings = settings_for(tasks, server.base_url, steps=3, max_tokens=16)
        running = asyncio.create_task(run(tmp_path, settings, "lost", Budget()))
        await both_busy.wait()  # each node is in the middle of its task
        server.holding = True
        # Waiting on state: answers landing in the cache, which other processes write (no
        # event to wait on here).
        while server.in_flight > server.held or len(cache) < server.accepted:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.to_thread(cluster.cluster.remove_node, cluster.worker)
        # Counted once the node is gone: requests it sent just before (still on their way
        # to the server when we looked) are in flight too, and held like the others.
        in_flight = server.in_flight
        server.holding = False
        server.gate.set()
        result = await running
        assert result.complete, [(t.task, t.reason) for t in result.tasks]
        assert result.restarts == 1  # the lost node's task, started again on the head
        assert len(set(result.nodes.values())) == 1
        # Only what was in flight on the lost node was paid twice.
        assert repaid(server) <= in_flight
        billed = server.billed_prompt_tokens + server.billed_completion_tokens
    cache.close()
    ledger = json.loads((tmp_path / "lost" / "spend.json").read_text())
    counted = ledger["settled"]["tokens_in"] + ledger["settled"]["tokens_out"]
    assert counted >= billed  # the lost node's open chunks count in full: never less
    for name in ("a.jsonl", "b.jsonl"):
        steps = (tmp_path / "lost" / name / "steps.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in steps] == [0, 1, 2, 3]
