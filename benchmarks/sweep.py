"""Sweep benchmark: 27 BBH tasks of different lengths under one engine, against the fake
OpenAI server in a separate process with a fixed requests/minute limit.

The tasks are the 27 BBH files of the data release, each cut to a different length (from
`--min-examples` to `--max-examples`, so their training splits range about 5x), optimized
for `--steps` steps of `--candidates` proposals, at most `--parallel` at once. The server (this
file with `--serve`) answers meta-prompts with fresh bracketed instructions and scorer
prompts with True/False from the prompt's hash, after `--latency` +- `--jitter` seconds, and
enforces `--rpm` as a token bucket of one second (OpenAI's shape); the client is told the
same `--rpm`. Every figure is a ratio measured in the same run:

- rate: the requests the server received per second of the sweep's wall time (loading the
  tasks and the last answers included), against the limit `rpm/60`, and the share answered
  429; the tail is the same ratio from the moment the queue of tasks is empty (fewer than
  `--parallel` tasks left) to the end;
- CPU per call: the client process's CPU time over the requests it sent (the server runs in
  its own process);
- peak memory: the client's peak resident set, before and after the sweep.

`--scales 1600,16000,50000` adds an evaluate-only series (no rate limit, no latency): the 27
tasks cut to 1608 examples in all, scored with 1, 10 and 31 instructions, each size in a fresh
process, reporting the client's CPU per pair and its peak memory against the pairs, beside
the same pairs scored as one plain `Engine.evaluate` in another fresh process (so the sweep's
own cost shows as a ratio, whatever the machine's load).

Usage: python benchmarks/sweep.py [--rpm 12000] [--steps 2] [--scales ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opro.engine.engine import Engine
from opro.optimize.loop import OptimizeConfig
from opro.sweep import (
    EvaluateOnly,
    ModelSettings,
    ProblemSettings,
    SweepEvent,
    SweepProgress,
    SweepSettings,
    sweep,
)
from opro.sweep.run import build_model
from opro.tasks.datasets import BBH_DIR, BBH_TASKS, load_task, resolve_data_dir
from opro.testing.fake_openai import (
    FakeOpenAIServer,
    FakeServerConfig,
    default_responder,
    serve_until_signalled,
)
from opro.testing.process import ServerProcess

META_MARK = "Write the text in square brackets."


def responder(prompt: str) -> str:
    """Fresh instructions for every meta-prompt (they differ step by step), True/False else."""
    if META_MARK in prompt:
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        return " ".join(f"[Think about part {digest[6 * i : 6 * i + 6]}.]" for i in range(8))
    return default_responder(prompt)


async def serve(args: argparse.Namespace) -> int:
    config = FakeServerConfig(
        latency_s=args.latency, jitter_s=args.jitter, rpm=args.rpm, responder=responder
    )
    server = FakeOpenAIServer(config)
    return await serve_until_signalled(server)


def cut_data(source: Path, target: Path, low: int, high: int) -> dict[str, int]:
    """The 27 BBH files, each cut to its own length (spread from `low` to `high`)."""
    (target / BBH_DIR).mkdir(parents=True)
    order = sorted(BBH_TASKS, key=lambda t: hashlib.sha256(t.encode()).digest())
    sizes = {}
    for rank, task in enumerate(order):
        size = low + (high - low) * rank // (len(order) - 1)
        data = json.loads((source / BBH_DIR / f"{task}.json").read_text())
        data["examples"] = data["examples"][:size]
        (target / BBH_DIR / f"{task}.json").write_text(json.dumps(data))
        sizes[task] = len(data["examples"])
    return sizes


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def run(args: argparse.Namespace, data: Path, cache: Path, url: str) -> dict[str, Any]:
    ticks: list[tuple[float, int, int, int]] = []  # time, calls, running, pending

    def on_event(event: SweepEvent) -> None:
        if isinstance(event, SweepProgress):
            pending = event.counts.get("pending", 0)
            ticks.append((time.perf_counter(), event.totals.calls, len(event.running), pending))

    role = {"base_url": url, "rpm": args.rpm, "max_concurrency": args.concurrency}
    settings = SweepSettings(
        patterns=("bbh/*",),
        include_variants=True,
        data_dir=str(data),
        scorer=ModelSettings("openai/fake-model", max_tokens=16, **role),
        optimizer=ModelSettings("openai/fake-model", max_tokens=256, **role),
        optimize=OptimizeConfig(steps=args.steps, candidates_per_step=args.candidates, test_top=1),
        problem=ProblemSettings(test_limit=args.test_limit),
        max_parallel_tasks=args.parallel,
    )
    rss0 = peak_rss_mb()
    async with Engine(cache_dir=cache) as engine:
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = await sweep(
            engine, settings, run_dir=cache.parent / "sweep", on_event=on_event, progress_every=1.0
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "complete": result.complete,
        "tasks": len(result.tasks),
        "wall_s": wall,
        "cpu_s": cpu,
        "calls": result.totals.calls,
        "cache_hits": result.totals.cache_hits,
        "ticks": [(t - t0, c, r, p) for t, c, r, p in ticks],
        "rss_before_mb": rss0,
        "rss_peak_mb": peak_rss_mb(),
    }


SCALE_LOW, SCALE_HIGH = 30, 90  # 27 tasks of 30..90 examples: 1608 in all


async def scale_run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """One evaluate-only sweep of about `args.scale_pairs` pairs (this process: fresh RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        examples = sum(
            cut_data(resolve_data_dir(args.data_dir), data, SCALE_LOW, SCALE_HIGH).values()
        )
        count = max(1, round(args.scale_pairs / examples))
        role = ModelSettings("openai/fake-model", base_url=url, max_tokens=16, max_concurrency=64)
        settings = SweepSettings(
            patterns=("bbh/*",),
            include_variants=True,
            data_dir=str(data),
            scorer=role,
            evaluate=EvaluateOnly(tuple(f"Instruction {i}: answer." for i in range(count)), "all"),
            max_parallel_tasks=args.parallel,
        )
        rss0 = peak_rss_mb()
        async with Engine(cache_dir=Path(tmp) / "cache") as engine:
            cpu0, t0 = time.process_time(), time.perf_counter()
            if args.plain:  # the same pairs as one evaluation, without the sweep
                tasks = [load_task(f"bbh/{t}", data_dir=data) for t in BBH_TASKS]
                scorer = build_model(engine, role, max_tokens=16, priority=1)
                assert settings.evaluate is not None
                report = await engine.evaluate(
                    settings.evaluate.instructions,
                    [ex for task in tasks for ex in task.examples],
                    scorer,
                )
                calls, complete = report.totals.calls, report.totals.errors == 0
            else:
                result = await sweep(engine, settings, run_dir=Path(tmp) / "sweep")
                calls, complete = result.totals.calls, result.complete
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pairs = examples * count
    return {
        "mode": "plain evaluate" if args.plain else "sweep",
        "pairs": pairs,
        "calls": calls,
        "complete": complete,
        "wall_s": wall,
        "cpu_ms_per_pair": 1000 * cpu / pairs,
        "rss_before_mb": rss0,
        "rss_peak_mb": peak_rss_mb(),
    }


def scale_series(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with ServerProcess() as server:
        for pairs in args.scales:
            for plain in ([], ["--plain"]):
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "row.json"
                    cmd = [sys.executable, __file__, "--scale-pairs", str(pairs), *plain]
                    cmd += ["--url", server.base_url, "--json", str(out)]
                    cmd += ["--parallel", str(args.parallel)]
                    if args.data_dir:
                        cmd += ["--data-dir", args.data_dir]
                    subprocess.run(cmd, check=True)
                    rows.append(json.loads(out.read_text()))
    return rows


def render_scales(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\nevaluate-only, no rate limit (plain: the same pairs as one `Engine.evaluate`)",
        "| pairs | run | wall s | CPU ms/pair | CPU vs plain | peak RSS MB (before) |",
        "|---|---|---|---|---|---|",
    ]
    plain = {r["pairs"]: r["cpu_ms_per_pair"] for r in rows if r["mode"] != "sweep"}
    for r in rows:
        ratio = r["cpu_ms_per_pair"] / plain[r["pairs"]] if r["pairs"] in plain else 0.0
        lines.append(
            f"| {r['pairs']} | {r['mode']} | {r['wall_s']:.1f} | {r['cpu_ms_per_pair']:.3f} | "
            f"{ratio:.2f} | {r['rss_peak_mb']:.0f} ({r['rss_before_mb']:.0f}) |"
        )
    return "\n".join(lines)


def figures(row: dict[str, Any], stats: dict[str, Any], args: argparse.Namespace) -> None:
    rate = args.rpm / 60.0
    n = stats["requests_total"]
    row["requests"] = n
    row["n429"] = stats["n429"]
    row["share_429"] = stats["n429"] / max(1, n)
    row["calls_per_s"] = n / row["wall_s"]
    row["rate_ratio"] = row["calls_per_s"] / rate
    row["cpu_ms_per_call"] = 1000 * row["cpu_s"] / max(1, row["calls"])
    ticks = row["ticks"]
    tail = next(((t, c) for t, c, running, pending in ticks
                 if pending == 0 and running < args.parallel), None)  # fmt: skip
    end_t, end_calls = row["wall_s"], row["calls"]
    if tail is not None and end_t - tail[0] > 0:
        row["tail_s"] = end_t - tail[0]
        row["tail_rate_ratio"] = (end_calls - tail[1]) / (end_t - tail[0]) / rate
    # Calls per whole second of the run, as a share of the limit (the last ones are the tail).
    per_second = []
    last_calls, next_edge = 0, 1.0
    for t, c, _, _ in ticks:
        if t >= next_edge:
            per_second.append((c - last_calls) / (t - next_edge + 1.0) / rate)
            last_calls, next_edge = c, t + 1.0
    row["per_second_ratio"] = per_second


def render(row: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"27 BBH tasks cut to {args.min_examples}-{args.max_examples} examples, {args.steps} "
        f"steps x {args.candidates} candidates, {args.parallel} tasks at once, server and "
        f"client at {args.rpm:g} rpm, latency {args.latency * 1000:.0f}+-"
        f"{args.jitter * 1000:.0f} ms",
        "",
        "| requests | wall s | requests/s (limit) | rate / limit | tail s | tail rate / limit | "
        "429s | CPU ms/call | peak RSS MB (before) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {row['requests']} | {row['wall_s']:.1f} | {row['calls_per_s']:.1f} "
        f"({args.rpm / 60:g}) | {100 * row['rate_ratio']:.1f}% | {row.get('tail_s', 0):.1f} | "
        f"{100 * row.get('tail_rate_ratio', 0):.1f}% | {row['n429']} "
        f"({100 * row['share_429']:.2f}%) | {row['cpu_ms_per_call']:.3f} | "
        f"{row['rss_peak_mb']:.0f} ({row['rss_before_mb']:.0f}) |",
    ]
    last = " ".join(f"{100 * r:.0f}" for r in row["per_second_ratio"][-12:])
    lines.append(f"\nlast 12 seconds, % of the limit: {last}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    source = resolve_data_dir(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        sizes = cut_data(source, data, args.min_examples, args.max_examples)
        server_args = ["--serve", "--rpm", str(args.rpm), "--latency", str(args.latency)]
        server_args += ["--jitter", str(args.jitter)]
        with ServerProcess(*server_args, command=[sys.executable, __file__]) as server:
            row = await run(args, data, Path(tmp) / "cache", server.base_url)
            figures(row, server.stats(), args)
    row["sizes"] = sizes
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rpm", type=float, default=12000.0)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--jitter", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--test-limit", type=int, default=10)
    p.add_argument("--min-examples", type=int, default=100)
    p.add_argument("--max-examples", type=int, default=250)
    p.add_argument("--data-dir", help="the paper's data release (default: $OPRO_DATA_DIR)")
    p.add_argument("--json", help="also write the figures as JSON here")
    p.add_argument(
        "--scales", type=lambda t: [int(x) for x in t.split(",")], default=[],
        help="also an evaluate-only series at about these numbers of pairs, e.g. 1600,16000",
    )  # fmt: skip
    p.add_argument("--scale-pairs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--skip-rate", action="store_true", help="only the --scales series")
    args = p.parse_args(argv)
    if args.serve:
        return asyncio.run(serve(args))
    if args.scale_pairs is not None:  # one size of the series, in its own process
        row = asyncio.run(scale_run(args, args.url))
        Path(args.json).write_text(json.dumps(row))
        return 0 if row["complete"] else 1
    out: dict[str, Any] = {}
    if not args.skip_rate:
        out["rate"] = row = asyncio.run(main_async(args))
        print(render(row, args))
    if args.scales:
        out["scales"] = scale_series(args)
        print(render_scales(out["scales"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    complete = [out["rate"]["complete"]] if "rate" in out else []
    return 0 if all(complete + [r["complete"] for r in out.get("scales", [])]) else 1


if __name__ == "__main__":
    sys.exit(main())
