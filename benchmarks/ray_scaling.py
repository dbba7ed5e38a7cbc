"""Ray scaling benchmark: the same evaluate-only sweep on a local Ray cluster of 1 and of 2
nodes, against a latency-bound fake server, with a per-call CPU cost in the scorer's
process so that one node's CPU is the bottleneck.

The fake OpenAI server runs on its own thread and event loop in this process (`--latency`
seconds per answer, no rate limit, so the server is never the limit); it notes the time of
each answer. Every worker process of the cluster gets a setup
hook (Ray's `worker_process_setup_hook`) that makes each OpenAI-compatible call spend
`--burn-ms` of CPU on its event loop after the answer arrives: a stand-in for what a real
in-process scorer costs per call (a tokenizer, a reward model, a grader). `--tasks` tasks of
`--examples` examples are each scored with `--instructions` instructions (every pair a miss:
a fresh cache per run), at most 2 tasks at once, one CPU per actor; configuration "1 node"
is a head with one CPU, "2 nodes" adds a second node with one CPU. Each configuration is a
fresh cluster. Reported: the sweep's wall time (from the call of `ray_sweep` to its return:
actor start-up and the last task's tail included), the steady rate (answers per second
between the 10th and the 90th percentile of the answer times: no start-up, no tail), and
the ratio 2 nodes / 1 node of both; the ideal is the number of cores the two nodes can
actually get (2 on an idle 2-core machine; less when other processes share it: the load
average is printed).

Usage: python benchmarks/ray_scaling.py [--burn-ms 4] [--latency 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported


def burn_setup(burn_ms: float) -> Any:
    """The worker setup hook: each OpenAI-compatible call costs `burn_ms` of CPU."""

    def setup() -> None:
        from opro.providers import openai as openai_provider

        cls = openai_provider.OpenAIProvider
        original = cls.complete

        async def complete(self: Any, request: Any) -> Any:
            result = await original(self, request)
            end = time.thread_time() + burn_ms / 1000
            while time.thread_time() < end:  # CPU, on the event loop, like a real scorer
                pass
            return result

        setattr(cls, "complete", complete)  # noqa: B010 - a method replaced on purpose

    return setup


def write_tasks(root: Path, tasks: int, examples: int) -> list[str]:
    paths = []
    for t in range(tasks):
        path = root / f"t{t}.jsonl"
        rows = [{"input": f"[t{t}] Is {i} even?", "target": "Yes"} for i in range(examples)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    return paths


async def sweep_once(base_url: str, paths: list[str], args: argparse.Namespace) -> float:
    from opro.cluster import RayOptions, ray_sweep
    from opro.engine.engine import Engine
    from opro.sweep import EvaluateOnly, ModelSettings, SweepSettings

    instructions = tuple(f"Instruction {i}." for i in range(args.instructions))
    settings = SweepSettings(
        patterns=tuple(paths),
        scorer=ModelSettings("openai/fake-model", base_url=base_url, max_tokens=8),
        evaluate=EvaluateOnly(instructions, split="all"),
        max_parallel_tasks=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        options = RayOptions(cache=cache, num_cpus=1)
        async with Engine(cache_dir=cache) as engine:
            start = time.perf_counter()
            result = await ray_sweep(engine, settings, run_dir=Path(tmp) / "s", options=options)
            wall = time.perf_counter() - start
        assert result.complete, [(t.task, t.reason) for t in result.tasks]
    return wall


def run_config(nodes: int, base_url: str, paths: list[str], args: argparse.Namespace) -> float:
    import ray
    from ray.cluster_utils import Cluster

    cluster: Any = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        ray.init(
            address=cluster.address,
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": burn_setup(args.burn_ms)},
        )
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        return asyncio.run(sweep_once(base_url, paths, args))
    finally:
        ray.shutdown()
        cluster.shutdown()


class ThreadServer:
    """The fake OpenAI server on a thread of its own, noting when it answers."""

    def __init__(self, latency: float) -> None:
        import threading

        from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, default_responder

        self.times: list[float] = []

        def responder(prompt: str) -> str:
            self.times.append(time.perf_counter())
            return default_responder(prompt)

        self.loop = asyncio.new_event_loop()
        self.server = FakeOpenAIServer(FakeServerConfig(latency_s=latency, responder=responder))
        self.base_url = self.loop.run_until_complete(self.server.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def steady_rate(self) -> float:
        times = sorted(self.times)
        lo, hi = int(0.1 * len(times)), int(0.9 * len(times))
        return (hi - lo) / (times[hi] - times[lo])

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burn-ms", type=float, default=4.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--instructions", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    server = ThreadServer(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_tasks(Path(tmp), args.tasks, args.examples)
            calls = args.tasks * args.examples * args.instructions
            for nodes in (1, 2):
                load = os.getloadavg()[0]
                server.times.clear()
                wall = run_config(nodes, server.base_url, paths, args)
                rows.append(
                    {
                        "nodes": nodes,
                        "calls": calls,
                        "wall_s": round(wall, 2),
                        "calls_per_s": round(calls / wall, 1),
                        "steady_calls_per_s": round(server.steady_rate(), 1),
                        "cpu_floor_s": round(calls * args.burn_ms / 1000 / nodes, 2),
                        "load_avg_before": round(load, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        server.close()
    ratio = rows[1]["calls_per_s"] / rows[0]["calls_per_s"]
    steady = rows[1]["steady_calls_per_s"] / rows[0]["steady_calls_per_s"]
    print(f"2 nodes / 1 node: {ratio:.2f}x calls/s over the wall time, {steady:.2f}x steady")
    if args.json is not None:
        out = {"rows": rows, "ratio": ratio, "steady_ratio": steady}
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
