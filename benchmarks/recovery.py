"""Recovery benchmark: how fast adaptive concurrency gets back to the server's limit after a
storm of 429s, against the fake OpenAI server in a separate process.

The client gives no rate (`--rpm`), so only the adaptive window (`engine/aimd.py`) and the
server's Retry-After pace it. Each regime runs one long evaluation; after `--warmup` seconds
the server is told (`POST /inject`) to answer the next `--storm` requests with 429. The
completions per second from the storm on are reported as a ratio to the server's limit:

- C (concurrency-bound): the server answers 429 at once to any request beyond 32 in flight
  (Retry-After 50 ms); 200 ms per request, so the limit is 32 / 0.2 s = 160 calls/s. The
  client may open 64 connections, so it must find the limit and keep probing it.
- R (rate-bound): the server allows 3000 requests/minute (a one-second bucket, 50/s);
  1 s per request, so the client needs about 50 calls in flight to reach the limit.

Nominal limits are not reachable on a loaded machine (HTTP and event-loop overhead per
call), so each regime first measures its ceiling: a client told the limit (C: 32
connections; R: --rpm 3000) runs for `--reference` seconds, and its mean rate after the
first second is the physical limit of this run (as `throughput.py` does). Rates are
reported against both.

Target: back to >= 90% of the ceiling within 10 s of the storm, and staying there: the
first second k from which every 3-second stretch averages >= 90% (single seconds vary by
+-10% on a shared machine, which says nothing about the limiter) is at most 10. The trace
of the concurrency window (sampled every second) is printed beside the rates.

Usage: python benchmarks/recovery.py [--warmup 5] [--after 15] [--storm 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import opro

TARGET = 0.9
DEADLINE_S = 10


@dataclass(frozen=True)
class Regime:
    name: str
    server_args: tuple[str, ...]
    limit_per_s: float  # calls/s the server allows
    told: opro.LimitConfig  # the limits of a client that knows the server's


REGIMES = (
    Regime(
        "C concurrency 32, 200 ms",
        ("--max-concurrency", "32", "--latency", "0.2", "--retry-after", "0.05"),
        32 / 0.2,
        opro.LimitConfig(max_concurrency=32),
    ),
    Regime(
        "R 3000 rpm, 1 s",
        ("--rpm", "3000", "--latency", "1.0", "--retry-after", "0.05"),
        50,
        opro.LimitConfig(max_concurrency=64, rpm=3000),
    ),
)


class AnyGrader:
    version = "bench-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return True


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        result: dict[str, Any] = orjson.loads(resp.read())
        return result


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10):
        pass


@asynccontextmanager
async def fake_server(args: tuple[str, ...]) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opro.testing.fake_openai",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
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


def _per_second(done_at: list[float], start: float, seconds: int, per_s: float) -> list[float]:
    return [sum(start + k <= t < start + k + 1 for t in done_at) / per_s for k in range(seconds)]


async def measure_ceiling(regime: Regime, seconds: float) -> float:
    """Calls/s of a client told the server's limit: the physical limit of this machine."""
    examples = [
        opro.Example(f"Reference {i}?", "True")
        for i in range(int(regime.limit_per_s * seconds * 2))
    ]
    done_at: list[float] = []
    async with fake_server(regime.server_args) as base_url, opro.Engine(use_cache=False) as e:
        scorer = e.model("openai/fake-model", base_url=base_url, limits=regime.told)
        task = asyncio.create_task(
            e.evaluate(
                ["Reference."],
                examples,
                scorer,
                grader=AnyGrader(),
                on_progress=lambda p: done_at.append(time.perf_counter()),
            )
        )
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    rates = _per_second(done_at, start + 1, int(seconds) - 1, 1.0)
    return sum(rates) / len(rates)


async def run_regime(
    regime: Regime, warmup: float, after: float, storm: int, ceiling: float, cache_dir: Path
) -> dict[str, Any]:
    pairs = int(regime.limit_per_s * (warmup + after) * 1.5)  # more than the run can finish
    instructions = [f"Instruction {i}." for i in range(8)]
    examples = [opro.Example(f"Question {i}?", "True") for i in range(pairs // 8 + 1)]
    done_at: list[float] = []
    windows: list[int] = []
    async with fake_server(regime.server_args) as base_url:
        root = base_url.rsplit("/v1", 1)[0]
        async with opro.Engine(cache_dir=cache_dir, retry=opro.RetryPolicy(max_attempts=100)) as e:
            scorer = e.model(
                "openai/fake-model", base_url=base_url, limits=opro.LimitConfig(max_concurrency=64)
            )
            last = 0

            def progress(p: opro.Progress) -> None:
                nonlocal last
                now = time.perf_counter()
                done_at.extend([now] * (p.done - last))
                last = p.done

            task = asyncio.create_task(
                e.evaluate(instructions, examples, scorer, grader=AnyGrader(), on_progress=progress)
            )
            start = time.perf_counter()
            while time.perf_counter() - start < warmup:
                windows.append(scorer.limiter.concurrency)
                await asyncio.sleep(1.0)
            await asyncio.to_thread(_post, f"{root}/inject?kind=429&count={storm}")
            storm_at = time.perf_counter()
            while time.perf_counter() - storm_at < after:
                windows.append(scorer.limiter.concurrency)
                await asyncio.sleep(1.0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        server = await asyncio.to_thread(_get, f"{root}/stats")
    before = [t for t in done_at if storm_at - warmup / 2 <= t < storm_at]
    calls = _per_second(done_at, storm_at, int(after), 1.0)
    seconds = [c / ceiling for c in calls]
    recovered = recovered_after(seconds)
    return {
        "regime": regime.name,
        "limit_per_s": regime.limit_per_s,
        "ceiling_per_s": ceiling,
        "storm": storm,
        "before_storm": len(before) / (warmup / 2) / ceiling,
        "calls_per_s_after_storm": calls,
        "seconds_after_storm": seconds,
        "recovered_after_s": recovered,
        "met": recovered is not None and recovered <= DEADLINE_S,
        "mean_after_storm": sum(seconds) / len(seconds),
        "windows": windows,
        "limiter_cuts": getattr(getattr(scorer.limiter, "window", None), "episode", None),
        "n429": scorer.stats.n429,
        "server_429s": server["errors_by_kind"],
        "server_max_in_flight": server["max_in_flight"],
    }


def recovered_after(seconds: list[float], stretch: int = 3) -> int | None:
    """The first second from which every `stretch`-second mean reaches TARGET (None: never)."""
    means = [
        sum(seconds[j : j + stretch]) / len(seconds[j : j + stretch]) for j in range(len(seconds))
    ]
    return next((k for k in range(len(means)) if all(m >= TARGET for m in means[k:])), None)


def render(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        per_s = " ".join(f"{100 * v:.0f}" for v in r["seconds_after_storm"])
        calls = " ".join(f"{v:.0f}" for v in r["calls_per_s_after_storm"])
        back = r["recovered_after_s"]
        verdict = "met" if r["met"] else "NOT met"
        lines += [
            f"{r['regime']}: limit {r['limit_per_s']:g} calls/s, ceiling measured "
            f"{r['ceiling_per_s']:.0f} calls/s ({100 * r['ceiling_per_s'] / r['limit_per_s']:.0f}%"
            f" of the limit), storm of {r['storm']} 429s",
            f"  before the storm: {100 * r['before_storm']:.0f}% of the ceiling",
            f"  calls each second after it: {calls}",
            f"  each second after it (% of the ceiling): {per_s}",
            f"  3-second means >= {100 * TARGET:.0f}% from second {back} on "
            f"(target: by second {DEADLINE_S}: {verdict}); "
            f"mean {100 * r['mean_after_storm']:.0f}%",
            f"  window each second: {' '.join(map(str, r['windows']))}",
            f"  429s {r['n429']} {r['server_429s']}, window cuts {r['limiter_cuts']}, "
            f"max in flight at the server {r['server_max_in_flight']}",
        ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for regime in REGIMES:
        if args.regime and not regime.name.startswith(args.regime):
            continue
        ceiling = await measure_ceiling(regime, args.reference)
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(
                await run_regime(regime, args.warmup, args.after, args.storm, ceiling, Path(tmp))
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--reference", type=float, default=6.0, help="seconds of the ceiling run")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before the storm")
    p.add_argument("--after", type=float, default=15.0, help="seconds measured after it")
    p.add_argument("--storm", type=int, default=64, help="429s the server sends at once")
    p.add_argument("--regime", help="only the regime whose name starts with this (C or R)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = asyncio.run(main_async(args))
    print(render(rows))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
