"""Warm-rerun benchmark: `opro evaluate` through the CLI, in fresh processes, on cached pairs.

A cold run of `--instructions` instructions on a task's examples (bbh/date_understanding:
80 x 250 = 20,000 pairs) against a fake OpenAI server in a separate process pays for every
pair; then the same command runs `--runs` more times, each a fresh process, and no request
may reach the server. Reported per rerun (medians), grading by both rule sets included:

- results/s by the report's own `wall_s` (the evaluation: cache reads, grading, report);
- results/s by the process's wall time (what a user waits for: interpreter start, imports,
  loading the task, writing the report), and the process's CPU time and peak memory.

The physical limits are measured in the same run, each in a fresh process:

- read floor: reading every stored value of the cache in one SQLite scan, nothing decoded
  or graded (the least any rerun must do);
- start floor: starting the interpreter and importing the CLI, then exiting.

Ratios are floor / measured (100% = nothing beyond the floor). Two answer shapes:
`short` is the stock fake server (answers "True"/"False", as models answering directly
repeat short answers); `cot` is a server of this script whose answers are ~400-character
step-by-step texts ending in "So the answer is ...", different for every pair, so no
verdict can be reused.

Usage: python benchmarks/warm.py [--task bbh/date_understanding] [--instructions 80]
       [--limit N] [--answers short --answers cot] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from opro.providers.simulated import SimulatedProvider
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, serve_until_signalled
from opro.testing.measure import measure
from opro.testing.process import ServerProcess

_SIM = SimulatedProvider("warm-benchmark")
_WORD = re.compile(r"[A-Za-z]{4,}")


def cot_answer(prompt: str) -> str:
    """A step-by-step answer (~400 characters) that is a pure function of the prompt."""
    digest = hashlib.sha256(prompt.encode()).digest()
    words = _WORD.findall(prompt) or ["nothing"]
    steps = [
        f"Step {i + 1}: consider "
        + " ".join(words[(digest[i] * 7 + k) % len(words)] for k in range(6))
        + "."
        for i in range(5)
    ]
    final = _SIM.answer(prompt, digest[31])  # "The answer is (B)." / "... Yes." / "... 42."
    return "Let's think step by step. " + " ".join(steps) + " So t" + final[1:]


async def _serve_cot() -> int:
    server = FakeOpenAIServer(FakeServerConfig(responder=cot_answer))
    return await serve_until_signalled(server)


READ_FLOOR = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1] + "/cache.db")
started = time.perf_counter()
rows = con.execute("SELECT key, value FROM Cache").fetchall()
print(len(rows), time.perf_counter() - started)
"""


def case(args: argparse.Namespace, answers: str, tmp: Path) -> dict[str, Any]:
    instructions = tmp / "instructions.txt"
    instructions.write_text(
        "".join(
            f"Instruction {i}: read the question carefully.\n" for i in range(args.instructions)
        )
    )
    if answers == "short":
        server = ServerProcess()
    else:
        server = ServerProcess(command=[sys.executable, __file__, "--serve-cot"])
    cache = tmp / f"cache-{answers}"
    cli = ["-m", "opro.cli.main", "evaluate", "--task", args.task]
    cli += ["--instructions-file", str(instructions), "--scorer", "openai/fake-model"]
    cli += ["--scorer-base-url", server.base_url, "--cache-dir", str(cache)]
    cli += ["--max-concurrency", "64"]
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
                    "wall_s": run.wall_s,
                    "cpu_s": run.cpu_s,
                    "peak_rss_mb": run.peak_rss_mb,
                    "pairs": totals["pairs"],
                    "report_wall_s": totals["wall_s"],
                    "cache_hits": totals["cache_hits"],
                    "calls": totals["calls"],
                }
            )
        reached = server.stats()["requests_total"] - paid
    finally:
        server.close()
    reads = [measure(["-c", READ_FLOOR, str(cache)]) for _ in range(3)]
    read_floor = statistics.median(float(r.stdout.split()[1]) for r in reads)
    starts = [measure(["-c", "import opro.cli.main"]) for _ in range(3)]
    start_floor = statistics.median(r.wall_s for r in starts)
    pairs = warm[0]["pairs"]
    report_wall = statistics.median(r["report_wall_s"] for r in warm)
    process_wall = statistics.median(r["wall_s"] for r in warm)
    return {
        "answers": answers,
        "task": args.task,
        "pairs": pairs,
        "cold_process_s": cold.wall_s,
        "warm_runs": len(warm),
        "warm_cache_hits": min(r["cache_hits"] for r in warm),
        "warm_calls": max(r["calls"] for r in warm),
        "warm_requests_to_server": reached,
        "report_wall_s": report_wall,
        "results_per_s_report": pairs / report_wall,
        "process_wall_s": process_wall,
        "results_per_s_process": pairs / process_wall,
        "process_cpu_s": statistics.median(r["cpu_s"] for r in warm),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in warm),
        "read_floor_s": read_floor,
        "start_floor_s": start_floor,
        "ratio_report_to_read_floor": read_floor / report_wall,
        "ratio_process_to_floors": (read_floor + start_floor) / process_wall,
        "report_wall_s_runs": [r["report_wall_s"] for r in warm],
        "process_wall_s_runs": [r["wall_s"] for r in warm],
    }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| answers | pairs | wall_s | results/s (wall_s) | read floor s | ratio | "
        "process s | results/s (process) | start+read floor s | ratio | CPU s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['answers']} | {r['pairs']} | {r['report_wall_s']:.3f} | "
            f"{r['results_per_s_report']:,.0f} | {r['read_floor_s']:.3f} | "
            f"{100 * r['ratio_report_to_read_floor']:.0f}% | {r['process_wall_s']:.2f} | "
            f"{r['results_per_s_process']:,.0f} | "
            f"{r['start_floor_s'] + r['read_floor_s']:.2f} | "
            f"{100 * r['ratio_process_to_floors']:.0f}% | {r['process_cpu_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    for r in rows:
        lines.append(
            f"\n{r['answers']}: {r['warm_runs']} warm reruns of {r['task']}, "
            f"{r['warm_requests_to_server']} requests reached the server; "
            f"wall_s per run {', '.join(f'{w:.3f}' for w in r['report_wall_s_runs'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--task", default="bbh/date_understanding")
    p.add_argument("--instructions", type=int, default=80)
    p.add_argument("--limit", type=int, help="use only the first N examples")
    p.add_argument("--answers", action="append", choices=["short", "cot"])
    p.add_argument("--runs", type=int, default=5, help="warm reruns (the median is reported)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--serve-cot", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_cot:
        return asyncio.run(_serve_cot())
    rows = []
    for answers in args.answers or ["short", "cot"]:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(case(args, answers, Path(tmp)))
    print(render(rows))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
