"""`opro demo linreg|tsp`: the paper's math demos (its Tables 2 and 3) on the generic OPRO loop.

Each command builds one `Problem` per run (a (w_true, b_true) setting and run index, or a TSP
instance), runs them all concurrently through `optimize` on one `Engine` (so the optimizer's
calls share its connection limits and cache), logs every run in its own directory under
`--run-dir`, and prints the table in the paper's layout. The table is also written beside the
runs as table.txt and table.json. The TSP references (CP-SAT, Held-Karp, the heuristics) are
computed before any model is called; `--baselines-only` stops there and needs no model.

Every user error ends as one `opro: error: ...` line; a budget stop says how to continue.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..tasks import linreg, tsp
from ..tasks.tsp_solvers import SolverError
from .budget import BudgetExceeded
from .cli_common import (
    UsageError,
    engine_from_args,
    non_negative_int,
    positive_float,
    positive_int,
)
from .limits import DEFAULT_MAX_CONCURRENCY
from .metaprompt import MetaPromptConfig
from .model import ModelCallError
from .optimizer import RESAMPLE_ROUNDS, OptimizationResult, OptimizeConfig, optimize
from .prices import parse_price
from .problems import Problem
from .retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S
from .runlog import CONFIG, STEPS, RunDirError, read_steps

_SETTING = re.compile(r"^\s*\(?\s*(-?\d+)\s*,\s*(-?\d+)\s*\)?\s*$")


def _setting(text: str) -> tuple[int, int]:
    match = _SETTING.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"a setting is W,B with integers, e.g. 15,14; got {text!r}"
        )
    return int(match.group(1)), int(match.group(2))


def _add_common(p: argparse.ArgumentParser, *, max_shown: int) -> None:
    """The optimizer, loop and engine options both demos share (named as in `opro optimize`)."""
    o = p.add_argument_group("optimizer")
    o.add_argument("--optimizer", help="provider/model that proposes solutions (required)")
    o.add_argument("--optimizer-base-url", help="OpenAI-compatible server for the optimizer")
    o.add_argument("--optimizer-api", choices=["chat", "completions"], help="API flavour")
    o.add_argument("--optimizer-max-tokens", type=positive_int, default=1024)
    o.add_argument("--optimizer-price", help="optimizer price IN,OUT in USD per million tokens")
    o.add_argument("--candidates-per-step", type=positive_int, default=8)
    o.add_argument("--temperature", type=float, default=1.0, help="optimizer temperature")
    o.add_argument("--max-shown", type=positive_int, default=max_shown, help="best solutions shown")
    o.add_argument("--seed", type=non_negative_int, default=0, help="seed of data and starts")
    o.add_argument("--run-dir", help="parent of the run directories (default: opro-runs/...)")
    o.add_argument("--resume", action="store_true", help="continue the runs in --run-dir")
    g = p.add_argument_group("engine")
    g.add_argument("--max-concurrency", type=positive_int, default=DEFAULT_MAX_CONCURRENCY)
    g.add_argument("--rpm", type=positive_float, help="requests/minute (default: adapt to 429s)")
    g.add_argument("--tpm", type=positive_float, help="tokens/minute")
    g.add_argument("--max-attempts", type=positive_int, default=DEFAULT_MAX_ATTEMPTS)
    g.add_argument(
        "--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt"
    )
    g.add_argument("--budget-usd", type=positive_float, help="hard cap on the cost of all runs")
    g.add_argument("--budget-tokens", type=positive_int, help="hard cap on their tokens")
    cache = g.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", help="result cache (default: $OPRO_CACHE_DIR or user cache)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def register(subparsers: Any) -> None:
    """Add `demo linreg` and `demo tsp` to the `opro` parser's subcommands."""
    demo = subparsers.add_parser("demo", help="the paper's math demos: linear regression, TSP")
    kinds = demo.add_subparsers(dest="demo", required=True)
    lr = kinds.add_parser("linreg", help="find integer (w, b) of least squared error (Table 2)")
    lr.add_argument("--runs", type=positive_int, default=5, help="runs per setting")
    lr.add_argument("--steps", type=non_negative_int, default=500, help="step cap per run")
    lr.add_argument(
        "--settings",
        nargs="+",
        type=_setting,
        default=list(linreg.PAPER_SETTINGS),
        metavar="W,B",
        help="true (w, b) settings (default: the paper's seven); quote a negative w with a "
        "leading space: ' -3,5'",
    )
    lr.add_argument("--points", type=positive_int, default=linreg.N_POINTS)
    _add_common(lr, max_shown=20)
    ts = kinds.add_parser("tsp", help="find the shortest tour through n points (Table 3)")
    ts.add_argument("--n", type=positive_int, nargs="+", default=[10, 15, 20, 50], help="nodes")
    ts.add_argument("--instances", type=positive_int, default=5, help="instances per n")
    ts.add_argument("--steps", type=non_negative_int, default=500, help="step cap per run")
    ts.add_argument(
        "--solver-time-limit",
        type=positive_float,
        default=60.0,
        help="CP-SAT seconds per instance",
    )
    ts.add_argument(
        "--baselines-only", action="store_true", help="only the heuristics' gaps; no model"
    )
    ts.add_argument(
        "--resample-invalid",
        action="store_true",
        help="ask the optimizer again for every invalid tour, as the paper's code does, until "
        f"a step has --candidates-per-step valid ones (at most {RESAMPLE_ROUNDS} more asks)",
    )
    _add_common(ts, max_shown=10)


@dataclass
class _Job:
    """One run: its problem, directory and the labels config.json keeps for reference."""

    problem: Problem
    run_dir: Path
    info: dict[str, Any]
    label: str
    invalid: int = 0
    proposed: int = 0
    result: OptimizationResult | None = field(default=None, repr=False)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


def _count_rejections(job: _Job) -> None:
    """Proposals and rejected ones (invalid or unparsable), from the run log: survives resume."""
    records, _ = read_steps(job.run_dir / STEPS)
    entries = [c for r in records if r["step"] > 0 for c in r["candidates"]]
    job.proposed = len(entries)
    job.invalid = sum(c["status"] == "rejected" for c in entries)


async def _run_jobs(args: argparse.Namespace, jobs: Sequence[_Job]) -> None:
    """All runs at once on one engine; the optimizer's limiter bounds the calls in flight."""
    meta = MetaPromptConfig(max_shown=args.max_shown, exemplars=0)
    cfg = OptimizeConfig(
        steps=args.steps,
        candidates_per_step=args.candidates_per_step,
        temperature=args.temperature,
        seed=args.seed,
        meta=meta,
        resample_invalid=getattr(args, "resample_invalid", False),
    )
    async with engine_from_args(args) as engine:
        model = engine.model(
            args.optimizer,
            base_url=args.optimizer_base_url,
            api=args.optimizer_api,
            max_concurrency=args.max_concurrency,
            rpm=args.rpm,
            tpm=args.tpm,
            max_tokens=args.optimizer_max_tokens,
            price=parse_price(args.optimizer_price) if args.optimizer_price else None,
            priority=0,
        )

        async def one(job: _Job) -> None:
            resume = args.resume and (job.run_dir / CONFIG).exists()
            job.result = await optimize(
                job.problem, model, cfg, run_dir=job.run_dir, resume=resume, info=job.info
            )
            _count_rejections(job)
            best = job.result.best
            found = "solved" if best and _solved(job.problem, best.solution) else "not solved"
            print(
                f"{job.label}: {found} after {job.result.steps_completed} steps",
                file=sys.stderr,
                flush=True,
            )

        try:
            async with asyncio.TaskGroup() as group:
                for job in jobs:
                    group.create_task(one(job))
        except BaseExceptionGroup as errors:
            raise _first_error(errors) from None


def _solved(problem: Problem, solution: str) -> bool:
    hook = getattr(problem, "solved", None)
    return hook is not None and bool(hook(solution))


def _root(args: argparse.Namespace) -> Path:
    if args.run_dir is not None:
        return Path(args.run_dir)
    if args.resume:
        raise UsageError("--resume needs the --run-dir of the runs to continue")
    return Path("opro-runs") / f"demo-{args.demo}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_fresh(jobs: Sequence[_Job], resume: bool) -> None:
    """Refuse before any call, not after some runs started, if a run directory is taken."""
    if resume:
        return
    for job in jobs:
        if (job.run_dir / CONFIG).exists() or (job.run_dir / STEPS).exists():
            raise UsageError(
                f"{job.run_dir} already holds a run; pass --resume to continue the runs, "
                "or choose another --run-dir"
            )


def _write_table(root: Path, text: str, rows: Any) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "table.txt").write_text(text, encoding="utf-8")
        (root / "table.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise UsageError(f"cannot write the table to {root}: {exc.strerror}") from exc


def _linreg(args: argparse.Namespace, root: Path) -> int:
    jobs: list[_Job] = []
    for w, b in args.settings:
        for r in range(args.runs):
            data = linreg.make_data(w, b, seed=(args.seed, r, 0), n=args.points)
            problem = linreg.LinearRegressionProblem(data, start_seed=(args.seed, r, 1))
            info = {"demo": "linreg", "w_true": w, "b_true": b, "run": r}
            label = f"linreg w={w} b={b} run {r}"
            jobs.append(_Job(problem, root / f"w{w}_b{b}" / f"run{r}", info, label))
    _check_fresh(jobs, args.resume)
    asyncio.run(_run_jobs(args, jobs))
    runs = []
    for job in jobs:
        assert job.result is not None and isinstance(job.problem, linreg.LinearRegressionProblem)
        best = job.result.best
        steps = best.step if best is not None and job.problem.solved(best.solution) else None
        data = job.problem.data
        runs.append(
            linreg.LinregRun(
                data.w_true, data.b_true, job.info["run"], steps, len(job.result.history),
                job.invalid,
            )
        )  # fmt: skip
    rows = linreg.summarize(runs)
    text = linreg.render_table(rows, args.optimizer)
    _write_table(root, text, {"rows": rows, "runs": [asdict(r) for r in runs]})
    print(text, end="")
    print(f"run directory: {root}")
    return 0


def _tsp_references(
    args: argparse.Namespace,
) -> list[tuple[int, int, tsp.TspInstance, tsp.TspReference]]:
    """Every instance with its exact optimum and heuristic tours, computed up front."""
    out = []
    for n in args.n:
        if n < tsp.MIN_NODES:
            raise UsageError(f"--n must be at least {tsp.MIN_NODES}, got {n}")
    for n in args.n:
        for i in range(args.instances):
            instance = tsp.make_instance(n, seed=(args.seed, n, i))
            started = time.perf_counter()
            ref = tsp.reference(instance, time_limit_s=args.solver_time_limit)
            proven = "" if ref.proven else " (time limit: not proven optimal)"
            print(
                f"tsp n={n} instance {i}: optimum {ref.optimum_length:.1f}{proven} "
                f"in {time.perf_counter() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            out.append((n, i, instance, ref))
    return out


def _tsp(args: argparse.Namespace, root: Path) -> int:
    references = _tsp_references(args)
    jobs: list[_Job] = []
    runs: list[tsp.TspRun] = []
    for n, i, instance, ref in references:
        if args.baselines_only:
            runs.append(tsp.TspRun(n, i, None, None, ref))
            continue
        problem = tsp.TspProblem(instance, ref, start_seed=(args.seed, n, i, 1))
        info = {"demo": "tsp", "n": n, "instance": i, "optimum_length": ref.optimum_length}
        jobs.append(_Job(problem, root / f"n{n}" / f"instance{i}", info, f"tsp n={n} #{i}"))
    if jobs:
        _check_fresh(jobs, args.resume)
        asyncio.run(_run_jobs(args, jobs))
    for job in jobs:
        assert job.result is not None and isinstance(job.problem, tsp.TspProblem)
        best = job.result.best
        assert best is not None  # the starting tours are always scored
        steps = best.step if job.problem.solved(best.solution) else None
        runs.append(
            tsp.TspRun(
                job.info["n"], job.info["instance"], best.score, steps, job.problem.ref,
                job.proposed, job.invalid,
            )
        )  # fmt: skip
    rows = tsp.summarize(runs)
    optimizer = "none (baselines only)" if args.baselines_only else args.optimizer
    text = tsp.render_table(rows, optimizer)
    detail = [{"n": r.n, "instance": r.instance, **asdict(r.ref)} for r in runs]
    _write_table(root, text, {"rows": rows, "instances": detail})
    print(text, end="")
    print(f"run directory: {root}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`opro demo ...`: 0 done, 2 user error, 3 stopped by the budget."""
    needs_model = not (args.demo == "tsp" and args.baselines_only)
    if needs_model and args.optimizer is None:
        raise UsageError(
            f"give an optimizer model: opro demo {args.demo} --optimizer provider/model "
            "(e.g. openai/gpt-4o)"
        )
    root = _root(args)
    try:
        return _linreg(args, root) if args.demo == "linreg" else _tsp(args, root)
    except (RunDirError, SolverError) as exc:
        raise UsageError(str(exc)) from None
    except ModelCallError as exc:
        raise UsageError(f"the optimizer model failed: {exc}") from None
    except BudgetExceeded:
        print(
            f"opro: stopped by the budget; the completed steps are in {root}: continue with "
            f"--resume --run-dir {root} and a larger budget",
            file=sys.stderr,
        )
        return 3
