"""Cost benchmark: the plan against the bill, through the CLI, on the fake server and on the
embedded model, for evaluate, optimize and sweep (issue 17).

The fake server (this file with `--serve`) bills tokens like a vendor (four characters a
token) and answers as a scorer does: one word, or, for a prompt that asks to think step by
step, a worked answer whose length varies with the prompt (`varied_responder`); meta-prompts
get fresh instructions, every other one of them a step-by-step one. The CLI runs at $1 per
million tokens each way, `--max-tokens 256`, each scenario in its own cache:

- evaluate on bbh/navigate (train, two instructions): the dry-run plan of a cold cache (the
  stated defaults), then after `--calibrate 10`, then once a first run has cached 10 examples
  per instruction; each plan against what the server billed for the run that followed;
- optimize (2 steps) and sweep (evaluate-only and optimize, two tasks) after the starting
  instructions are cached: their plans are upper bounds of the calls (every candidate new),
  so the figure is the run's own plan-vs-bill line: the expected cost of the calls it made;
- the embedded model (`local/smollm2-135m`, price 0): the same with tokens instead of USD.

Every row says whether the expectation is within 25% of the bill and whether the bill
stayed under the worst case the budget would have reserved.

Usage: python benchmarks/cost_estimate.py [--skip-embedded | --skip-fake] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from opro.testing.fake_openai import (
    FakeOpenAIServer,
    FakeServerConfig,
    serve_until_signalled,
    varied_responder,
)
from opro.testing.process import ServerProcess

META_MARK = "Write the text in square brackets."
TARGET = 0.25
NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def responder(prompt: str) -> str:
    """Fresh instructions for meta-prompts (half of them step by step), else a scorer's
    answer whose length depends on the instruction (`varied_responder`)."""
    if META_MARK in prompt:
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        ideas = [
            f"[Think step by step about part {digest[6 * i : 6 * i + 6]}.]"
            if i % 2
            else f"[Answer part {digest[6 * i : 6 * i + 6]} directly.]"
            for i in range(8)
        ]
        return " ".join(ideas)
    return varied_responder(prompt)


async def serve() -> int:
    return await serve_until_signalled(FakeOpenAIServer(FakeServerConfig(responder=responder)))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "opro.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"opro {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    return done


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in {text!r}")
    return float(found.group(1).replace(",", ""))


def dry_plan(out: str) -> dict[str, Any]:
    line = out.splitlines()[0]
    return {
        "expected": number(r"expected cost \$" + NUM, line),
        "low": number(r"expected cost \$[0-9.]+ \(\$" + NUM, line),
        "high": number(r"expected cost \$[0-9.]+ \(\$[0-9.]+-\$" + NUM, line),
        "worst": number(r"worst case \$" + NUM, line),
        "tokens_in": number(r"~" + NUM + " input tokens", line),
        "tokens_out": number(r"\+ ~" + NUM + " output tokens", line),
        "source": line.split("output tokens expected (", 1)[1].split(";", 1)[1].split(")")[0],
    }


def bill_rows(out: str, scenario: str, use_tokens: bool) -> list[dict[str, Any]]:
    """The run's own `... plan vs bill: expected $X for N calls (a + b tokens); billed $Y
    (c + d tokens ...); worst case $W` lines."""
    rows = []
    for line in out.splitlines():
        if "plan vs bill:" not in line:
            continue
        label = line.split(":", 1)[0]
        exp_in = number(r"calls \(" + NUM, line)
        exp_out = number(r"calls \([0-9,]+ \+ " + NUM, line)
        bill_in = number(r"billed \$[0-9.]+ \(" + NUM, line)
        bill_out = number(r"billed \$[0-9.]+ \([0-9,]+ \+ " + NUM, line)
        row: dict[str, Any] = {
            "scenario": f"{scenario}: {label}",
            "calls": number(r"for " + NUM + " calls", line),
            "source": line.split("output expected from ", 1)[-1],
        }
        if use_tokens:
            row |= {"expected": exp_in + exp_out, "billed": bill_in + bill_out, "worst": None}
            row["unit"] = "tokens"
        else:
            row |= {
                "expected": number(r"expected \$" + NUM, line),
                "billed": number(r"billed \$" + NUM, line),
                "worst": number(r"worst case \$" + NUM, line),
                "unit": "usd",
            }
        rows.append(judge(row))
    return rows


def judge(row: dict[str, Any]) -> dict[str, Any]:
    billed, expected = row["billed"], row["expected"]
    row["error"] = (expected - billed) / billed if billed else None
    row["within_25"] = row["error"] is not None and abs(row["error"]) <= TARGET
    row["under_worst"] = None if row["worst"] is None else billed <= row["worst"]
    return row


def server_bill(server: ServerProcess) -> float:
    stats = server.stats()
    return float(stats["billed_prompt_tokens"] + stats["billed_completion_tokens"]) / 1e6


def fake_scenarios(tmp: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ServerProcess("--serve", command=[sys.executable, __file__]) as server:
        model = ["--scorer", "openai/fake-model", "--scorer-base-url", server.base_url]
        model += ["--price", "1,1", "--max-tokens", "256"]
        opt = ["--optimizer", "openai/fake-model", "--optimizer-base-url", server.base_url]
        opt += ["--optimizer-price", "1,1"]
        ev = ["evaluate", "--task", "bbh/navigate", "--split", "train", "--instruction", ""]
        ev += ["--instruction", "Think step by step.", *model]

        def plan_then_bill(name: str, cache: Path, *extra: str) -> None:
            plan = dry_plan(cli(*ev, "--cache-dir", str(cache), "--dry-run", env=env).stdout)
            server.reset()
            done = cli(*ev, "--cache-dir", str(cache), *extra, env=env)
            billed = server_bill(server)
            if extra:  # the calibration is paid inside the run: its plan comes after it
                line = next(x for x in done.stdout.splitlines() if x.startswith("plan vs bill"))
                paid = number(r"calibration paid \$" + NUM, line)
                plan["expected"] = number(r"expected \$" + NUM, line)
                plan["worst"] = number(r"worst case \$" + NUM, line)
                plan["source"] = line.split("output expected from ", 1)[1]
                billed -= paid
            rows.append(judge({"scenario": name, "unit": "usd", "billed": billed, **plan}))

        plan_then_bill("evaluate, cold cache (stated defaults)", tmp / "c1")
        plan_then_bill(
            "evaluate, --calibrate 10 (rest of the run)", tmp / "c2", "--calibrate", "10"
        )
        cli(*ev, "--cache-dir", str(tmp / "c3"), "--limit", "10", env=env)
        plan_then_bill("evaluate, 10 examples cached per instruction", tmp / "c3")

        warm = tmp / "c4"
        cli(*ev, "--cache-dir", str(warm), "--limit", "10", env=env)
        run = ["--task", "bbh/navigate", *model, *opt, "--steps", "2", "--test-top", "1"]
        run += ["--start", "", "--start", "Think step by step.", "--cache-dir", str(warm)]
        done = cli("optimize", *run, "--run-dir", str(tmp / "run"), env=env)
        rows += bill_rows(done.stdout, "optimize, 2 steps", use_tokens=False)

        tasks = ["--tasks", "bbh/navigate", "--tasks", "bbh/sports_understanding"]
        sweep_ev = ["sweep", *tasks, "--evaluate-only", "--instruction", ""]
        sweep_ev += ["--instruction", "Think step by step.", "--split", "test", *model]
        sweep_ev += ["--cache-dir", str(tmp / "c5")]
        cli(*sweep_ev, "--run-dir", str(tmp / "s0"), "--test-limit", "10", env=env)
        done = cli(*sweep_ev, "--run-dir", str(tmp / "s1"), env=env)
        rows += bill_rows(done.stdout, "sweep --evaluate-only, 2 tasks", use_tokens=False)

        sweep_opt = ["sweep", *tasks, *model, *opt, "--test-limit", "20"]
        sweep_opt += ["--start", "", "--start", "Think step by step."]
        sweep_opt += ["--cache-dir", str(tmp / "c6")]
        cli(*sweep_opt, "--steps", "0", "--test-top", "0", "--run-dir", str(tmp / "s2"), env=env)
        done = cli(
            *sweep_opt, "--steps", "2", "--test-top", "1", "--run-dir", str(tmp / "s3"), env=env
        )
        rows += bill_rows(done.stdout, "sweep optimize, 2 tasks x 2 steps", use_tokens=False)
    return rows


def embedded_scenarios(tmp: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """The embedded model: price 0, so tokens; small, as it runs on the CPU."""
    # A slow CPU must not turn answers into timeouts (retries are charged their worst case).
    cache = ["--cache-dir", str(tmp / "e1"), "--timeout", "600"]
    ev = ["evaluate", "--task", "bbh/navigate", "--split", "train", "--instruction", ""]
    ev += ["--instruction", "Think step by step.", "--max-tokens", "32", *cache]
    cli(*ev, "--limit", "5", env=env)
    done = cli(*ev, "--limit", "15", env=env)
    rows = bill_rows(done.stdout, "embedded evaluate, 5 cached per instruction", True)
    run = ["--task", "bbh/navigate", "--steps", "1", "--candidates-per-step", "2"]
    run += ["--train-fraction", "0.05", "--test-limit", "5", "--test-top", "1", *cache]
    run += ["--optimizer-max-tokens", "64"]
    done = cli("optimize", *run, "--run-dir", str(tmp / "erun"), env=env)
    rows += bill_rows(done.stdout, "embedded optimize, 1 step", True)
    return rows


def _usd(v: float) -> str:
    return f"${v:.4f}"


def _tokens(v: float) -> str:
    return f"{v:,.0f} tok"


def render(rows: list[dict[str, Any]]) -> str:
    head = "| scenario | expected | billed | error | worst case | within 25% | bill <= worst |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "$" if r["unit"] == "usd" else ""
        fmt = _usd if unit else _tokens
        worst = fmt(r["worst"]) if r["worst"] is not None else "n/a (price 0)"
        err = f"{100 * r['error']:+.0f}%" if r["error"] is not None else "n/a"
        under = {True: "yes", False: "NO", None: "n/a"}[r["under_worst"]]
        lines.append(
            f"| {r['scenario']} | {fmt(r['expected'])} | {fmt(r['billed'])} | {err} | "
            f"{worst} | {'yes' if r['within_25'] else 'no'} | {under} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--skip-embedded", action="store_true", help="only the fake server")
    p.add_argument("--skip-fake", action="store_true", help="only the embedded model")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.serve:
        return asyncio.run(serve())
    env = {**os.environ, "OPENAI_API_KEY": "sk-benchmark"}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [] if args.skip_fake else fake_scenarios(Path(tmp), env)
        if not args.skip_embedded:
            rows += embedded_scenarios(Path(tmp), env)
    print(render(rows))
    for r in rows:
        print(f"  {r['scenario']}: output expected from {r['source']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
