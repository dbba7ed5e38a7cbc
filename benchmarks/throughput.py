"""Throughput benchmark: the engine against the fake OpenAI server in a separate process.

Each figure is reported as a ratio to the physical limit measured in the same run, since
absolute seconds on a shared 2-core machine mean little:

- R1 (latency-bound): 200 +- 50 ms per request, 64 connections, no rate limit. The limit
  is the makespan of an ideal client with zero overhead that keeps all 64 connections
  busy, sending the requests in the order the server drew their latencies (the server
  reports them). The looser bound max(sum / 64, longest) is reported too.
- R2 (rate-bound): 100 ms per request, the server allows 3000 requests/minute as a token
  bucket of one second (50 requests) refilled at 50/s, and the client is told --rpm 3000.
  The limit is (N - 50) / 50 s + 100 ms: the bucket's burst, then its refill rate.
- Warm cache: the R1 evaluation again with a fresh engine on the same cache directory
  (results/s; no request may reach the server). In-process and small; `warm.py` measures
  warm reruns the way a user runs them (the CLI, a fresh process, 20,000 pairs).
- Engine CPU per call: the client process's CPU time over the calls it made.

Usage: python benchmarks/throughput.py [--examples 200] [--instructions 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import sys
import tempfile
import time
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import opro


@dataclass
class Regime:
    name: str
    latency: float
    jitter: float
    rpm: float | None
    connections: int


class LastWordGrader:
    version = "bench-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction.strip() == example.target


def examples(n: int) -> list[opro.Example]:
    return [
        opro.Example(f"Is the expression {i} % 3 == 0 true?", "True" if i % 3 == 0 else "False")
        for i in range(n)
    ]


def instructions(n: int) -> list[str]:
    return [f"Instruction number {i}: answer True or False." for i in range(n)]


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        result: dict[str, Any] = orjson.loads(resp.read())
        return result


def _post(url: str) -> None:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass


@asynccontextmanager
async def fake_server(regime: Regime):  # type: ignore[no-untyped-def]
    args = ["--port", "0", "--latency", str(regime.latency), "--jitter", str(regime.jitter)]
    if regime.rpm is not None:
        args += ["--rpm", str(regime.rpm)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opro.testing.fake_openai", *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    try:
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        await proc.wait()


async def run_regime(regime: Regime, n_ins: int, n_ex: int, cache_dir: Path) -> dict[str, Any]:
    ins, exs = instructions(n_ins), examples(n_ex)
    async with fake_server(regime) as base_url:
        stats_url = base_url.rsplit("/v1", 1)[0] + "/stats"
        await asyncio.to_thread(_post, stats_url + "/reset")
        async with opro.Engine(cache_dir=cache_dir) as engine:
            scorer = engine.model(
                "openai/fake-model",
                base_url=base_url,
                limits=opro.LimitConfig(max_concurrency=regime.connections, rpm=regime.rpm),
            )
            cpu0 = time.process_time()
            report = await engine.evaluate(ins, exs, scorer, grader=LastWordGrader())
            cpu = time.process_time() - cpu0
        stats = await asyncio.to_thread(_get, stats_url)
        warm: dict[str, Any] = {}
        if regime.rpm is None:
            async with opro.Engine(cache_dir=cache_dir) as engine:
                scorer = engine.model("openai/fake-model", base_url=base_url)
                again = await engine.evaluate(ins, exs, scorer, grader=LastWordGrader())
            after = await asyncio.to_thread(_get, stats_url)
            warm = {
                "warm_results_per_s": again.totals.pairs / again.totals.wall_s,
                "warm_wall_s": again.totals.wall_s,
                "warm_requests_to_server": after["requests_total"] - stats["requests_total"],
            }
    n = report.totals.pairs
    wall = report.totals.wall_s
    if regime.rpm is None:
        lat = stats["latencies"]
        limit = ideal_makespan(lat, regime.connections)
        bound = max(sum(lat) / regime.connections, max(lat))
    else:
        rate = regime.rpm / 60.0
        burst = max(1.0, rate)
        limit = bound = max(0.0, (n - burst) / rate) + regime.latency
    return {
        "regime": regime.name,
        "pairs": n,
        "calls": report.totals.calls,
        "errors": report.totals.errors,
        "wall_s": wall,
        "calls_per_s": report.totals.calls / wall,
        "limit_s": limit,
        "ratio_to_limit": limit / wall,
        "lower_bound_s": bound,
        "ratio_to_lower_bound": bound / wall,
        "n429": stats["n429"],
        "share_429": stats["n429"] / max(1, stats["requests_total"]),
        "cpu_ms_per_call": 1000 * cpu / max(1, report.totals.calls),
        "max_in_flight": stats["max_in_flight"],
        **warm,
    }


def ideal_makespan(latencies: list[float], lanes: int) -> float:
    """Finish time of FIFO dispatch over `lanes` connections with no client overhead."""
    free = [0.0] * min(lanes, max(1, len(latencies)))
    for latency in latencies:
        start = heapq.heappop(free)
        heapq.heappush(free, start + latency)
    return max(free)


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| regime | pairs | wall s | limit s | ratio to limit | calls/s | 429s | CPU ms/call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['regime']} | {r['pairs']} | {r['wall_s']:.2f} | {r['limit_s']:.2f} | "
            f"{100 * r['ratio_to_limit']:.1f}% | {r['calls_per_s']:.0f} | "
            f"{r['n429']} ({100 * r['share_429']:.2f}%) | {r['cpu_ms_per_call']:.3f} |"
        )
    for r in rows:
        if "warm_results_per_s" in r:
            lines.append(
                f"\nwarm cache rerun of {r['regime']}: {r['warm_results_per_s']:,.0f} results/s "
                f"({r['warm_wall_s'] * 1000:.0f} ms, {r['warm_requests_to_server']} requests "
                "reached the server; in this process, so not what a CLI user gets: see "
                "benchmarks/warm.py)"
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    regimes = [
        Regime("R1 latency 200+-50ms, 64 conns", args.r1_latency, args.r1_latency / 4, None, 64),
        Regime("R2 latency 100ms, 3000 rpm", args.r2_latency, 0.0, args.rpm, 64),
    ]
    rows = []
    for regime in regimes:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(await run_regime(regime, args.instructions, args.examples, Path(tmp)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--instructions", type=int, default=8)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--r1-latency", type=float, default=0.2)
    p.add_argument("--r2-latency", type=float, default=0.1)
    p.add_argument("--rpm", type=float, default=3000.0)
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = asyncio.run(main_async(args))
    print(render(rows))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
