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
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from opro.checks import CANDIDATES, SECONDS, SEED, TEMPERATURE, IntRange
from opro.checks import STEPS as STEP_COUNT
from opro.cli.common import build_model, engine_from_settings, optimizer_role
from opro.cli.help import add_command
from opro.cli.options import (
    CACHE,
    CALL_LIMITS,
    COST,
    OPTIMIZER_MODELS,
    RUN_DIR,
    LimitSettings,
)
from opro.cli.options import CONFIG as SETTINGS_FILE
from opro.cli.settings import Option, OptionGroup, Settings, UsageError, add_groups, resolve
from opro.engine.budget import BudgetExceeded
from opro.engine.engine import Engine
from opro.engine.ledger import LedgerError, recording, stop_message
from opro.engine.model import Model, ModelCallError
from opro.optimize.loop import RESAMPLE_ROUNDS, OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import SHOWN, MetaPromptConfig
from opro.optimize.problem import Problem
from opro.optimize.records import proposals
from opro.optimize.runlog import CONFIG, STEPS, RunDirError, read_steps
from opro.problems import linreg, tsp
from opro.problems.tsp_solvers import SolverError

_SETTING = re.compile(r"^\s*\(?\s*(-?\d{1,7})\s*,\s*(-?\d{1,7})\s*\)?\s*$")
SETTING_RANGE = IntRange(-1_000_000, 1_000_000)  # |w|, |b|: the paper's are below 40
RUNS = IntRange(1, 10_000)
POINTS = IntRange(2, 100_000)  # a line needs two points
NODES = IntRange(tsp.MIN_NODES, 1_000)
INSTANCES = IntRange(1, 10_000)


def _setting(text: str) -> tuple[int, int]:
    match = _SETTING.match(text)
    bad = argparse.ArgumentTypeError(
        f"a setting is W,B with integers from {SETTING_RANGE.low} to {SETTING_RANGE.high}, "
        f"e.g. 15,14; got {text[:40]!r}"
    )
    if match is None:
        raise bad
    w, b = int(match.group(1)), int(match.group(2))
    if not (SETTING_RANGE.low <= min(w, b) and max(w, b) <= SETTING_RANGE.high):
        raise bad
    return w, b


MODELS = OPTIMIZER_MODELS.changed(
    "--optimizer",
    help="the model that proposes solutions, as provider/model (required)",
    default_text=None,
).changed("--optimizer-max-tokens", default=1024, default_text=None)
DEMO_LOOP = (
    Option(
        "--candidates-per-step",
        "solutions the optimizer proposes per step",
        type=CANDIDATES,
        default=8,
        metavar="N",
    ),
    Option(
        "--temperature", "optimizer temperature, 0 to 2", type=TEMPERATURE, default=1.0, metavar="T"
    ),
    Option("--max-shown", "best solutions shown in the meta-prompt", type=SHOWN, metavar="N"),
    Option(
        "--seed", "seed of the data and the starting solutions", type=SEED, default=0, metavar="N"
    ),
)
RUNS_DIR = RUN_DIR.changed(
    "--run-dir",
    help="parent of the run directories (one per run), table.txt and table.json",
    default_text="opro-runs/demo-<demo>-<time>",
).changed("--resume", help="continue the runs in --run-dir")
DEMO_COST = COST.without("--price", "--dry-run").changed(
    "--budget-usd",
    help="hard cap on the TOTAL cost of all runs in --run-dir (on --resume, what they spent "
    "before counts)",
)
LINREG = OptionGroup(
    "linear regression",
    (
        Option("--runs", "runs per setting", type=RUNS, default=5, metavar="N"),
        Option("--steps", "step cap per run", type=STEP_COUNT, default=500, metavar="N"),
        Option(
            "--settings",
            "true (w, b) settings; quote a negative w with a leading space: ' -3,5'",
            type=_setting,
            kind="list",
            default=list(linreg.PAPER_SETTINGS),
            metavar="W,B",
            default_text="the paper's seven",
        ),
        Option("--points", "data points per setting", type=POINTS, default=linreg.N_POINTS),
    ),
)
TSP = OptionGroup(
    "traveling salesman",
    (
        Option("--n", "nodes per instance", type=NODES, kind="list", default=[10, 15, 20, 50]),
        Option("--instances", "instances per n", type=INSTANCES, default=5, metavar="N"),
        Option("--steps", "step cap per run", type=STEP_COUNT, default=500, metavar="N"),
        Option(
            "--solver-time-limit",
            "CP-SAT seconds per instance for the exact optimum",
            type=SECONDS,
            default=60.0,
            metavar="SECONDS",
        ),
        Option("--baselines-only", "only the heuristics' gaps; no model", kind="switch"),
        Option(
            "--resample-invalid",
            "ask the optimizer again for every invalid tour, as the paper's code does, until a "
            f"step has --candidates-per-step valid ones (at most {RESAMPLE_ROUNDS} more asks)",
            kind="switch",
        ),
    ),
)


def _groups(demo: str) -> tuple[OptionGroup, ...]:
    """The options of `opro demo linreg` or `opro demo tsp`, in help order."""
    own = LINREG if demo == "linreg" else TSP
    max_shown = 20 if demo == "linreg" else 10
    loop = OptionGroup("optimizer loop", DEMO_LOOP).changed("--max-shown", default=max_shown)
    return (SETTINGS_FILE, own, MODELS, loop, RUNS_DIR, CALL_LIMITS, DEMO_COST, CACHE)


def register(subparsers: Any) -> None:
    """Add `demo linreg` and `demo tsp` to the `opro` parser's subcommands."""
    demo = add_command(
        subparsers,
        "demo",
        "The paper's math demos on the OPRO loop: linear regression (Table 2) and the "
        "traveling salesman (Table 3).",
        [
            "opro demo linreg --optimizer openai/gpt-4o",
            "opro demo tsp --optimizer openai/gpt-4o --n 10 15 --instances 3",
            "opro demo tsp --baselines-only",
        ],
        short="the paper's math demos: linear regression, TSP",
    )
    kinds = demo.add_subparsers(dest="demo", required=True, metavar="DEMO")
    lr = add_command(
        kinds,
        "linreg",
        "Find the integer (w, b) of least squared error, as in the paper's Table 2.",
        usage="opro demo linreg --optimizer PROVIDER/MODEL [options]",
        examples=[
            "opro demo linreg --optimizer openai/gpt-4o",
            "opro demo linreg --optimizer openai/gpt-4o --settings 15,14 ' -3,5' --runs 3",
        ],
    )
    add_groups(lr, _groups("linreg"))
    ts = add_command(
        kinds,
        "tsp",
        "Find the shortest tour through n points, as in the paper's Table 3.",
        usage="opro demo tsp --optimizer PROVIDER/MODEL [options]",
        examples=[
            "opro demo tsp --optimizer openai/gpt-4o --n 10 15 20",
            "opro demo tsp --baselines-only --n 10 15 --instances 3",
        ],
        details="The exact optimum (CP-SAT, OR-Tools) and the heuristics' tours are computed "
        "first; the model, key and run directory are checked before that.",
    )
    add_groups(ts, _groups("tsp"))


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What the demos read, typed; `source` keeps every value with where it came from."""

    source: Settings
    demo: str
    optimizer: str | None
    steps: int
    candidates_per_step: int
    temperature: float
    max_shown: int
    seed: int
    run_dir: str | None = None
    resume: bool = False
    runs: int = 0
    settings: list[tuple[int, int]] = field(default_factory=list)
    points: int = 0
    n: list[int] = field(default_factory=list)
    instances: int = 0
    solver_time_limit: float = 0.0
    baselines_only: bool = False
    resample_invalid: bool = False


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    s = resolve(_groups(args.demo), args, command=f"demo {args.demo}")
    return s.pick(DemoSettings, source=s, demo=args.demo)


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
    entries = proposals(records)
    job.proposed = len(entries)
    job.invalid = sum(c["status"] == "rejected" for c in entries)


async def _run_jobs(args: DemoSettings, root: Path, jobs: Sequence[_Job]) -> None:
    """All runs at once on one engine; the optimizer's limiter bounds the calls in flight."""
    meta = MetaPromptConfig(max_shown=args.max_shown, exemplars=0)
    cfg = OptimizeConfig(
        steps=args.steps,
        candidates_per_step=args.candidates_per_step,
        temperature=args.temperature,
        seed=args.seed,
        meta=meta,
        resample_invalid=args.resample_invalid,
    )
    async with engine_from_settings(args.source) as engine:
        model = _optimizer_model(engine, args)

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

        # One budget for all the runs, recorded beside them: on resume it is their total.
        async with recording(engine.budget, root, resume=args.resume):
            try:
                async with asyncio.TaskGroup() as group:
                    for job in jobs:
                        group.create_task(one(job))
            except BaseExceptionGroup as errors:
                error = _first_error(errors)
                if isinstance(error, BudgetExceeded):
                    raise BudgetExceeded(stop_message(engine.budget, error)) from None
                raise error from None


def _optimizer_model(engine: Engine, args: DemoSettings) -> Model:
    return build_model(engine, optimizer_role(args.source), args.source.pick(LimitSettings))


def _run_dirs(args: DemoSettings, root: Path) -> list[Path]:
    """Where each run is logged; a pure function of the options, known before any work."""
    if args.demo == "linreg":
        return [_linreg_dir(root, w, b, r) for w, b in args.settings for r in range(args.runs)]
    if args.baselines_only:
        return []
    return [_tsp_dir(root, n, i) for n in args.n for i in range(args.instances)]


def _linreg_dir(root: Path, w: int, b: int, run: int) -> Path:
    return root / f"w{w}_b{b}" / f"run{run}"


def _tsp_dir(root: Path, n: int, instance: int) -> Path:
    return root / f"n{n}" / f"instance{instance}"


def _check_writable_dir(path: Path) -> None:
    """Fail now if `path` (or the directory that would hold it) cannot be written to."""
    try:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"cannot use {path} as --run-dir: {probe} is not a directory")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to --run-dir {path}: {exc.strerror}") from None


def _preflight(args: DemoSettings, root: Path) -> None:
    """Everything that can be checked before work that costs time or money.

    The exact TSP solves take minutes, so a mistyped model name, a missing key or base URL,
    an unusable price or budget, a taken or unwritable run directory must all be reported
    before them. The optimizer model is built on a throwaway engine (the same code path as
    the real run: the provider registry, key and URL checks, price and budget, limits, cache).
    Numbers were checked by the parser already.
    """
    _check_writable_dir(root)
    _check_fresh_dirs(_run_dirs(args, root), args.resume)
    if args.demo == "tsp" and args.baselines_only:
        return

    async def build() -> None:
        async with engine_from_settings(args.source) as engine:
            _optimizer_model(engine, args)

    asyncio.run(build())


def _solved(problem: Problem, solution: str) -> bool:
    hook = getattr(problem, "solved", None)
    return hook is not None and bool(hook(solution))


def _root(args: DemoSettings) -> Path:
    if args.run_dir is not None:
        return Path(args.run_dir)
    if args.resume:
        raise UsageError("--resume needs the --run-dir of the runs to continue")
    return Path("opro-runs") / f"demo-{args.demo}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_fresh_dirs(dirs: Sequence[Path], resume: bool) -> None:
    """Refuse before any call, not after some runs started, if a run directory is taken."""
    if resume:
        return
    for run_dir in dirs:
        if (run_dir / CONFIG).exists() or (run_dir / STEPS).exists():
            raise UsageError(
                f"{run_dir} already holds a run; pass --resume to continue the runs, "
                "or choose another --run-dir"
            )


def _write_table(root: Path, text: str, rows: Any) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "table.txt").write_text(text, encoding="utf-8")
        (root / "table.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise UsageError(f"cannot write the table to {root}: {exc.strerror}") from exc


def _linreg(args: DemoSettings, root: Path) -> int:
    jobs: list[_Job] = []
    for w, b in args.settings:
        for r in range(args.runs):
            data = linreg.make_data(w, b, seed=(args.seed, r, 0), n=args.points)
            problem = linreg.LinearRegressionProblem(data, start_seed=(args.seed, r, 1))
            info = {"demo": "linreg", "w_true": w, "b_true": b, "run": r}
            label = f"linreg w={w} b={b} run {r}"
            jobs.append(_Job(problem, _linreg_dir(root, w, b, r), info, label))
    asyncio.run(_run_jobs(args, root, jobs))
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
    text = linreg.render_table(rows, args.optimizer or "none")
    _write_table(root, text, {"rows": rows, "runs": [asdict(r) for r in runs]})
    print(text, end="")
    print(f"run directory: {root}")
    return 0


def _tsp_references(
    args: DemoSettings,
) -> list[tuple[int, int, tsp.TspInstance, tsp.TspReference]]:
    """Every instance with its exact optimum and heuristic tours, computed up front."""
    out = []
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


def _tsp(args: DemoSettings, root: Path) -> int:
    references = _tsp_references(args)
    jobs: list[_Job] = []
    runs: list[tsp.TspRun] = []
    for n, i, instance, ref in references:
        if args.baselines_only:
            runs.append(tsp.TspRun(n, i, None, None, ref))
            continue
        problem = tsp.TspProblem(instance, ref, start_seed=(args.seed, n, i, 1))
        info = {"demo": "tsp", "n": n, "instance": i, "optimum_length": ref.optimum_length}
        jobs.append(_Job(problem, _tsp_dir(root, n, i), info, f"tsp n={n} #{i}"))
    if jobs:
        asyncio.run(_run_jobs(args, root, jobs))
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
    optimizer = "none (baselines only)" if args.baselines_only else args.optimizer or "none"
    text = tsp.render_table(rows, optimizer)
    detail = [{"n": r.n, "instance": r.instance, **asdict(r.ref)} for r in runs]
    _write_table(root, text, {"rows": rows, "instances": detail})
    print(text, end="")
    print(f"run directory: {root}")
    return 0


def cmd_demo(namespace: argparse.Namespace) -> int:
    """`opro demo ...`: 0 done, 2 user error, 3 stopped by the budget."""
    args = settings_from_args(namespace)
    needs_model = not (args.demo == "tsp" and args.baselines_only)
    if needs_model and args.optimizer is None:
        raise UsageError(
            f"give an optimizer model: opro demo {args.demo} --optimizer provider/model "
            "(e.g. openai/gpt-4o)"
        )
    root = _root(args)
    _preflight(args, root)
    try:
        return _linreg(args, root) if args.demo == "linreg" else _tsp(args, root)
    except (RunDirError, SolverError) as exc:
        raise UsageError(str(exc)) from None
    except ModelCallError as exc:
        raise UsageError(f"the optimizer model failed: {exc}") from None
    except BudgetExceeded as exc:
        print(
            f"opro: stopped by the budget; the completed steps are in {root}: {exc} "
            f"(--resume --run-dir {root}; the cap is the total of all runs over all sessions)",
            file=sys.stderr,
        )
        return 3
    except LedgerError as exc:
        raise UsageError(str(exc)) from None
