"""Endpoint pool benchmark: is a pool of N replicas worth N replicas?

Each replica is a fake OpenAI server in its own process with a fixed capacity: it answers
after `--latency` seconds and refuses (429) beyond `--capacity` requests in flight, so one
replica serves at most capacity / latency requests per second. The client gives each
replica that window (`--max-concurrency` = capacity).

For each N, in the same run and against the same kind of replica: the throughput of one
engine with one replica (T1, measured on each of the N replicas in turn and averaged),
then of one engine with the pool of the N (TN), alternating, `--repeats` times; medians
of each. The figure is TN / (N x T1): 1.0 means the pool loses nothing to routing, uneven
shares or 429s (for N = 1 the two runs are the same thing, so its figure shows the
measurement's noise). The machine's load average is reported with it, since the client's
own CPU is shared.

Usage: python benchmarks/pools.py [--sizes 1,2,4] [--pairs 80] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import opro
from opro.testing.process import ServerProcess


class AnyGrader:
    version = "bench-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return bool(prediction)


@dataclass
class Setup:
    latency: float
    capacity: int
    pairs: int  # per replica
    repeats: int


async def throughput(urls: list[str], setup: Setup, tag: str) -> tuple[float, int, int, float]:
    """Results per second of one engine over `urls`; its errors, 429s and CPU ms per call."""
    n = setup.pairs * len(urls)
    examples = [opro.Example(f"{tag} question {i}?", "x") for i in range(n)]
    retry = opro.RetryPolicy(base_delay=0.01, max_delay=0.1, timeout=30.0)
    async with opro.Engine(use_cache=False, retry=retry) as engine:
        scorer = engine.model(
            "openai-compatible/fake-model",
            base_url=urls if len(urls) > 1 else urls[0],
            limits=opro.LimitConfig(max_concurrency=setup.capacity),
        )
        start, cpu = time.perf_counter(), time.process_time()
        report = await engine.evaluate([""], examples, scorer, grader=AnyGrader())
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / wall, report.totals.errors, report.totals.n429, 1000 * cpu / n


async def measure(n: int, setup: Setup) -> dict[str, Any]:
    args = ["--latency", str(setup.latency), "--max-concurrency", str(setup.capacity)]
    servers = [ServerProcess(*args, "--retry-after", "0.05") for _ in range(n)]
    try:
        urls = [s.base_url for s in servers]
        singles: list[tuple[float, int, int, float]] = []
        pools: list[tuple[float, int, int, float]] = []
        for r in range(setup.repeats):
            for i, url in enumerate(urls):
                singles.append(await throughput([url], setup, f"one{n}.{r}.{i}"))
            pools.append(await throughput(urls, setup, f"pool{n}.{r}"))
        served = [s.stats()["accepted"] for s in servers]
    finally:
        for server in servers:
            server.close()
    one = statistics.median(r[0] for r in singles)
    pooled = statistics.median(r[0] for r in pools)
    pool_pairs = setup.pairs * n * setup.repeats
    return {
        "endpoints": n,
        "one_endpoint_per_s": round(one, 1),
        "pool_per_s": round(pooled, 1),
        "ideal_per_s": round(n * setup.capacity / setup.latency, 1),
        "ratio": round(pooled / (n * one), 3),
        "errors": sum(r[1] for r in singles + pools),
        "pool_429s": sum(r[2] for r in pools),
        "cpu_ms_per_call_one": round(statistics.median(r[3] for r in singles), 3),
        "cpu_ms_per_call_pool": round(statistics.median(r[3] for r in pools), 3),
        # each server also answered its own single-endpoint runs' pairs
        "pool_share_per_endpoint": [
            round((c - setup.pairs * setup.repeats) / pool_pairs, 3) for c in served
        ],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "endpoints  one endpoint/s  pool/s   pool / (N x one)  CPU ms/call one, pool  load avg"
    ]
    for r in rows:
        lines.append(
            f"{r['endpoints']:>9}  {r['one_endpoint_per_s']:>14.1f}  {r['pool_per_s']:>6.1f}"
            f"   {r['ratio']:>16.3f}  {r['cpu_ms_per_call_one']:>10.2f}, "
            f"{r['cpu_ms_per_call_pool']:>4.2f}  {r['load_avg_1m']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4", help="pool sizes, comma-separated")
    parser.add_argument("--pairs", type=int, default=80, help="pairs per replica and run")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request")
    parser.add_argument("--capacity", type=int, default=8, help="requests in flight per replica")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, medians kept")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    setup = Setup(args.latency, args.capacity, args.pairs, args.repeats)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [asyncio.run(measure(n, setup)) for n in sizes]
    print(render(rows))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
