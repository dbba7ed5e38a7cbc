"""Warm reruns from the shared Redis cache: `opro evaluate --cache redis://...` through the
CLI, in fresh processes, beside the same rerun from the disk cache.

For each backend a cold run of `--instructions` instructions on a task's examples
(bbh/date_understanding: 80 x 250 = 20,000 pairs) pays the fake OpenAI server (a separate
process) for every pair; then the same command runs `--runs` more times, each in a fresh
process, and no request may reach the server. Redis is a real `redis-server` on 127.0.0.1
(`testing/redis_server.py`). Reported per backend (medians of the reruns): results/s by the
report's own `wall_s` (cache reads, grading, report) and by the process's wall time, and
the read floor: fetching every stored value in a fresh process (Redis: pipelined MGETs of
1,000 keys; disk: one SQLite scan), nothing decoded or graded.

Usage: python benchmarks/warm_redis.py [--task bbh/date_understanding] [--instructions 80]
       [--limit N] [--runs 5] [--backend redis --backend disk] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from opro.testing.measure import measure
from opro.testing.process import ServerProcess
from opro.testing.redis_server import RedisServer

REDIS_FLOOR = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
names = list(client.scan_iter(match="opro:v1:*", count=1000))
started = time.perf_counter()
pipe = client.pipeline(transaction=False)
for i in range(0, len(names), 1000):
    pipe.mget(names[i : i + 1000])
values = [v for part in pipe.execute() for v in part]
print(len(values), time.perf_counter() - started)
"""
DISK_FLOOR = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1] + "/cache.db")
started = time.perf_counter()
rows = con.execute("SELECT key, value FROM Cache").fetchall()
print(len(rows), time.perf_counter() - started)
"""


def case(args: argparse.Namespace, backend: str, tmp: Path) -> dict[str, Any]:
    instructions = tmp / "instructions.txt"
    instructions.write_text(
        "".join(
            f"Instruction {i}: read the question carefully.\n" for i in range(args.instructions)
        )
    )
    redis_server = RedisServer().start() if backend == "redis" else None
    spec = redis_server.url if redis_server is not None else str(tmp / "cache")
    server = ServerProcess()
    cli = ["-m", "opro.cli.main", "evaluate", "--task", args.task]
    cli += ["--instructions-file", str(instructions), "--scorer", "openai/fake-model"]
    cli += ["--scorer-base-url", server.base_url, "--cache", spec, "--max-concurrency", "64"]
    if args.limit:
        cli += ["--limit", str(args.limit)]
    try:
        cold = measure([*cli, "--out", str(tmp / "cold.json")])
        paid = server.stats()["requests_total"]
        warm: list[dict[str, Any]] = []
        for i in range(args.runs):
            out = tmp / f"warm{i}.json"
            run = measure([*cli, "--out", str(out)])
            totals = orjson.loads(out.read_bytes())["totals"]
            warm.append(
                {
                    "process_wall_s": run.wall_s,
                    "cpu_s": run.cpu_s,
                    "report_wall_s": totals["wall_s"],
                    "pairs": totals["pairs"],
                    "cache_hits": totals["cache_hits"],
                    "calls": totals["calls"],
                }
            )
        reached = server.stats()["requests_total"] - paid
        floor_code = REDIS_FLOOR if backend == "redis" else DISK_FLOOR
        floors = [measure(["-c", floor_code, spec]) for _ in range(3)]
    finally:
        server.close()
        if redis_server is not None:
            redis_server.close()
    read_floor = statistics.median(float(r.stdout.split()[1]) for r in floors)
    pairs = warm[0]["pairs"]
    report_wall = statistics.median(w["report_wall_s"] for w in warm)
    process_wall = statistics.median(w["process_wall_s"] for w in warm)
    return {
        "backend": backend,
        "task": args.task,
        "pairs": pairs,
        "cold_process_s": cold.wall_s,
        "warm_runs": len(warm),
        "warm_cache_hits": min(w["cache_hits"] for w in warm),
        "warm_requests_to_server": reached,
        "report_wall_s": report_wall,
        "results_per_s_report": pairs / report_wall,
        "process_wall_s": process_wall,
        "results_per_s_process": pairs / process_wall,
        "process_cpu_s": statistics.median(w["cpu_s"] for w in warm),
        "read_floor_s": read_floor,
        "warm_calls": max(w["calls"] for w in warm),
        "report_wall_s_runs": [w["report_wall_s"] for w in warm],
    }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | pairs | wall_s | results/s (wall_s) | read floor s | process s | "
        "results/s (process) | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['pairs']} | {r['report_wall_s']:.3f} | "
            f"{r['results_per_s_report']:,.0f} | {r['read_floor_s']:.3f} | "
            f"{r['process_wall_s']:.2f} | {r['results_per_s_process']:,.0f} | "
            f"{r['process_cpu_s']:.2f} |"
        )
    for r in rows:
        lines.append(
            f"\n{r['backend']}: {r['warm_runs']} warm reruns of {r['task']}, "
            f"{r['warm_requests_to_server']} requests reached the server; "
            f"wall_s per run {', '.join(f'{w:.3f}' for w in r['report_wall_s_runs'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--task", default="bbh/date_understanding")
    p.add_argument("--instructions", type=int, default=80)
    p.add_argument("--limit", type=int, help="use only the first N examples")
    p.add_argument("--backend", action="append", choices=["redis", "disk"])
    p.add_argument("--runs", type=int, default=5, help="warm reruns (the median is reported)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    for backend in args.backend or ["redis", "disk"]:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(case(args, backend, Path(tmp)))
    print(render(rows))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
