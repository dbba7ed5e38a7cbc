"""Engine CPU per pair and peak memory vs pairs: `opro evaluate` with the simulated scorer.

Each size runs the CLI in a fresh process, as a user would, with the in-process simulated
scorer (`simulated/...`: no network, no latency) and a fresh on-disk cache, so every pair is
a miss that goes the whole way: render, key, cache read, single-flight, budget, limiter,
the model, cache write, grading by both rule sets. Sizes: 1.6k, 16k and 50k pairs (8, 80
and 250 instructions on 200 examples of bbh/date_understanding by default). Each size runs
again with `--no-cache`, which separates the engine from SQLite's share (its page cache and
memory map grow with the database, up to diskcache's bounds of 32 MB and 64 MB).

Per size, from the child's own rusage and its own peak RSS (`opro.testing.measure`):

- CPU per pair: (CPU of the run - CPU of a 1-pair run of the same command) / pairs, so the
  interpreter start and imports are not spread over the pairs;
- of which the simulated model: the same prompts answered by `SimulatedProvider.answer` in
  this process (it stands in for a server, whose work is not the engine's);
- engine CPU per pair: the difference; the target is flat across sizes and <= 0.25 ms;
- peak RSS: it should grow with the results kept (a few bytes per pair), not with the
  pairs waiting for a call (a request each, if they were all built up front).

Usage: python benchmarks/cpu.py [--sizes 8,80,250] [--examples 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from opro.providers.simulated import SimulatedProvider
from opro.tasks import load_task
from opro.tasks.prompts import render_prompt
from opro.testing.measure import measure

MODEL = "simulated/cpu-benchmark"


def instructions(n: int) -> list[str]:
    return [f"Instruction {i}: read the question carefully and answer." for i in range(n)]


def model_cpu_per_pair(task: str, n_examples: int, n_instructions: int) -> float:
    """CPU seconds per pair of the simulated model itself on (a sample of) the same prompts."""
    examples = load_task(task).examples[:n_examples]
    provider = SimulatedProvider(MODEL.split("/", 1)[1])
    prompts = [render_prompt(i, e.input) for i in instructions(n_instructions) for e in examples]
    prompts = prompts[:: max(1, len(prompts) // 4000)]
    started = time.process_time()
    for prompt in prompts:
        provider.answer(prompt)
    return (time.process_time() - started) / len(prompts)


def measure_size(
    args: argparse.Namespace, cache: str, n_instructions: int, tmp: Path
) -> dict[str, Any]:
    file = tmp / f"instructions-{n_instructions}.txt"
    file.write_text("".join(line + "\n" for line in instructions(n_instructions)))

    def command(limit: int, directory: Path, out: Path) -> list[str]:
        cli = ["-m", "opro.cli.main", "evaluate", "--task", args.task]
        cli += ["--instructions-file", str(file), "--scorer", MODEL, "--limit", str(limit)]
        where = ["--cache-dir", str(directory)] if cache == "disk" else ["--no-cache"]
        return [*cli, *where, "--out", str(out)]

    base = measure(command(1, tmp / f"base-{n_instructions}", tmp / "base.json"))
    run = measure(command(args.examples, tmp / f"cache-{n_instructions}", tmp / "run.json"))
    totals = orjson.loads((tmp / "run.json").read_bytes())["totals"]
    base_pairs = orjson.loads((tmp / "base.json").read_bytes())["totals"]["pairs"]
    pairs = totals["pairs"]
    cpu_per_pair = (run.cpu_s - base.cpu_s) / (pairs - base_pairs)
    model = model_cpu_per_pair(args.task, args.examples, n_instructions)
    return {
        "cache": cache,
        "pairs": pairs,
        "calls": totals["calls"],
        "errors": totals["errors"],
        "wall_s": run.wall_s,
        "report_wall_s": totals["wall_s"],
        "cpu_s": run.cpu_s,
        "base_cpu_s": base.cpu_s,
        "cpu_ms_per_pair": 1000 * cpu_per_pair,
        "model_ms_per_pair": 1000 * model,
        "engine_ms_per_pair": 1000 * (cpu_per_pair - model),
        "peak_rss_mb": run.peak_rss_mb,
        "base_peak_rss_mb": base.peak_rss_mb,
    }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cache | pairs | wall s | CPU ms/pair | of which the model | engine CPU ms/pair | "
        "peak RSS MB | RSS growth over a 1-pair run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cache']} | {r['pairs']} | {r['wall_s']:.1f} | {r['cpu_ms_per_pair']:.3f} | "
            f"{r['model_ms_per_pair']:.3f} | {r['engine_ms_per_pair']:.3f} | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['base_peak_rss_mb']:+.1f} MB |"
        )
    for cache in dict.fromkeys(r["cache"] for r in rows):
        mine = [r for r in rows if r["cache"] == cache]
        first, last = mine[0], mine[-1]
        if len(mine) < 2:
            continue
        growth = (last["peak_rss_mb"] - first["peak_rss_mb"]) * 1024 * 1024
        lines.append(
            f"\n{cache} cache: engine CPU per pair at {last['pairs']} pairs is "
            f"{last['engine_ms_per_pair'] / first['engine_ms_per_pair']:.2f}x that at "
            f"{first['pairs']}; peak RSS grows {growth / (last['pairs'] - first['pairs']):.0f} "
            "bytes per extra pair"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--task", default="bbh/date_understanding")
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--sizes", default="8,80,250", help="instruction counts, comma-separated")
    p.add_argument("--cache", action="append", choices=["disk", "none"], help="default: both")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.examples < 2:
        p.error("--examples must be at least 2 (a 1-example run is the baseline)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cache in args.cache or ["disk", "none"]:
            for size in (int(s) for s in args.sizes.split(",")):
                rows.append(measure_size(args, cache, size, Path(tmp)))
    print(render(rows))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
