"""`opro sweep`: OPRO (or an evaluation) on many tasks under one engine.

The command takes every option of `opro optimize` (the same definitions, through argparse's
`parents`, resolved by the same `cli.optimize.resolve`: defaults, then `--config`, then
flags) plus the sweep's own: `--tasks` patterns, `--include-variants`, `--evaluate-only`
with `--instruction`/`--instructions-file` and `--split`, and `--max-parallel-tasks`. The
resolved options are stored in sweep.json (`info.cli`; a base URL with a secret in it is
withheld), so `opro sweep --resume --run-dir DIR [--budget-usd 60]` needs no other flag:
flags given on resume override the stored ones, and the library refuses any that would
change results. Progress goes to stderr as plain lines: one per running task and a totals
line, every `--progress-every` seconds; the summary goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from opro.caches.open import cache_label
from opro.checks import SECONDS, FloatRange, IntRange
from opro.cli.batch import batch_settings, check_batch_scorer
from opro.cli.common import (
    DEFAULT_MODEL,
    EMBEDDED_SCORER_API,
    EMBEDDED_SCORER_MAX_TOKENS,
    EMBEDDED_SCORER_STOP,
    UsageError,
    default_position,
    engine_from_settings,
    error_policy,
    uses_embedded_scorer,
)
from opro.cli.help import add_command
from opro.cli.optimize import GROUPS as OPTIMIZE_GROUPS
from opro.cli.optimize import configs
from opro.cli.options import base_urls
from opro.cli.protocol import apply_protocol, qa_framing
from opro.cli.runplan import RunPlan, plan_vs_bill
from opro.cli.settings import Option, OptionGroup, Settings, add_groups, resolve
from opro.engine.engine import Engine
from opro.engine.ledger import LedgerError
from opro.engine.prices import parse_price
from opro.engine.spend import Spend
from opro.errors import OproError
from opro.optimize.runlog import RunDirError
from opro.providers.urls import redact_url
from opro.sweep import (
    EvaluateOnly,
    ModelSettings,
    ProblemSettings,
    SweepEvent,
    SweepProgress,
    SweepResult,
    SweepSettings,
    TaskFinished,
    TaskStarted,
    expand_tasks,
    sweep,
)
from opro.sweep.plan import TaskPlan, plan_sweep, total_plan
from opro.sweep.state import read_record

# Not stored for resume: where the sweep is, whether it resumes, how it reports progress.
# Nor where it runs: a sweep resumes on any cluster, or on none.
_NOT_STORED = {"command", "config", "resume", "run_dir", "dry_run", "ray", "ray_cpus"}
_URLS = ("scorer_base_url", "optimizer_base_url", "cache")  # may hold a secret
WITHHELD = "<withheld: it holds a secret; give it again on --resume>"
PARALLEL = IntRange(1, 10_000)

SWEEP = OptionGroup(
    "sweep",
    (
        Option(
            "--tasks",
            "task pattern, repeatable: 'bbh/*' (the 23 paper tasks), a name, or a .jsonl/.csv",
            kind="append",
            metavar="PATTERN",
        ),
        Option(
            "--include-variants",
            "globs also match BBH's smaller logical_deduction/tracking_shuffled_objects sizes",
            kind="switch",
        ),
        Option(
            "--evaluate-only",
            "score the given instructions on every task instead of optimizing",
            kind="switch",
        ),
        Option("--instruction", "evaluate-only: an instruction (repeatable)", kind="append"),
        Option("--instructions-file", "evaluate-only: one instruction per line", metavar="FILE"),
        Option(
            "--split",
            "evaluate-only: the examples scored",
            choices=("train", "test", "all"),
            default="test",
        ),
        Option(
            "--max-parallel-tasks", "tasks running at once", type=PARALLEL, default=4, metavar="N"
        ),
        Option(
            "--progress-every",
            "seconds between progress lines",
            type=SECONDS,
            default=10.0,
            metavar="S",
        ),
    ),
    exclusive=(("--instruction", "--instructions-file"),),
)


RAY_CPUS = FloatRange(0.0, 1024.0, low_open=True)


RAY = OptionGroup(
    "ray cluster",
    (
        Option(
            "--ray",
            "run each task in a Ray actor on this cluster: 'auto' (the cluster this machine "
            "is part of) or ray://HEAD:10001; limits and budget are shared by the whole "
            "cluster, results come back to --run-dir (needs pip install 'opro-engine[ray]')",
            metavar="ADDRESS",
        ),
        Option(
            "--ray-cpus",
            "CPUs each task's Ray actor reserves",
            type=RAY_CPUS,
            default=1.0,
            metavar="N",
        ),
    ),
)
GROUPS = (*OPTIMIZE_GROUPS, SWEEP, RAY)
EXAMPLES = (
    "opro sweep --tasks 'bbh/*' --scorer openai/gpt-4o-mini --optimizer openai/gpt-4o \\\n"
    "    --steps 20 --budget-usd 30 --run-dir sweeps/bbh",
    "opro sweep --evaluate-only --tasks 'bbh/*' --instructions-file found.txt --split test",
    "opro sweep --resume --run-dir sweeps/bbh --budget-usd 60   # the sweep's new total",
    "opro report sweeps/bbh",
)


def register(subparsers: Any) -> None:
    """Add `sweep` to the `opro` parser: optimize's options plus the sweep's own."""
    p = add_command(
        subparsers,
        "sweep",
        "Run OPRO (or, with --evaluate-only, score given instructions) on many tasks under one "
        "engine: one rate limit per connection, one cache, one budget.",
        EXAMPLES,
        "Every option of `opro optimize` applies to each task; --run-dir is the sweep "
        "directory (default opro-sweeps/<time>), --budget-usd the sweep's total over all "
        "sessions. --task is one more pattern, as --tasks.",
        short="run OPRO on many tasks under one engine and one budget",
        usage="opro sweep --tasks PATTERN [--tasks ...] [options]",
    )
    add_groups(p, GROUPS)


def _settings(args: argparse.Namespace) -> Settings:
    """optimize's layering and the sweep's own options, then (on resume) the stored options
    for every option not given now."""
    s = resolve(GROUPS, args, command="sweep")
    if s["resume"]:
        if s["run_dir"] is None:
            raise UsageError(f"{s.where('resume')} needs the --run-dir of the sweep to continue")
        stored = read_record(Path(s["run_dir"])).info.get("cli")
        if isinstance(stored, dict):
            for dest, value in stored.items():
                if dest in s and dest not in _NOT_STORED:
                    s.derive(dest, value, f"the options stored in {s['run_dir']}/sweep.json")
    apply_protocol(s)
    if s["position"] is None:
        s.derive("position", default_position(s), "the scorer")
    for dest in _URLS:
        if s[dest] == WITHHELD:
            raise UsageError(f"give --{dest.replace('_', '-')} again: it was not stored")
    if s["task"]:
        s.values["tasks"] = [*(s["tasks"] or []), s["task"]]
        s.values["task"] = None
    return s


def _instructions(s: Settings) -> list[str]:
    if s["instruction"]:
        return list(s["instruction"])
    if not s["instructions_file"]:
        raise UsageError("--evaluate-only needs --instruction or --instructions-file")
    path = Path(s["instructions_file"])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read instructions file {path}: {exc}") from None
    found = [line for line in lines if line.strip()]
    if not found:
        raise UsageError(f"instructions file {path} has no instructions (one per line)")
    return found


def _models(s: Settings) -> tuple[ModelSettings, ModelSettings | None]:
    """The scorer and optimizer as `opro optimize` builds them (the embedded model's own
    defaults when no model is named); the scorer's max tokens stay per task if not given."""
    embedded = uses_embedded_scorer(s)
    limits = {"max_concurrency": s["max_concurrency"], "rpm": s["rpm"], "tpm": s["tpm"]}
    scorer = ModelSettings(
        s["scorer"] or DEFAULT_MODEL,
        base_url=base_urls(s["scorer_base_url"]),
        api=s["scorer_api"] or (EMBEDDED_SCORER_API if embedded else None),
        max_tokens=s["max_tokens"] or (EMBEDDED_SCORER_MAX_TOKENS if embedded else None),
        stop=tuple(
            s["stop"] if s["stop"] is not None else (EMBEDDED_SCORER_STOP if embedded else ())
        ),
        price=parse_price(s["price"]) if s["price"] else None,
        **limits,
    )
    if s["evaluate_only"]:
        return scorer, None
    optimizer = ModelSettings(
        s["optimizer"] or DEFAULT_MODEL,
        base_url=base_urls(s["optimizer_base_url"]),
        api=s["optimizer_api"],
        max_tokens=s["optimizer_max_tokens"],
        price=parse_price(s["optimizer_price"]) if s["optimizer_price"] else None,
        **limits,
    )
    return scorer, optimizer


def sweep_settings(s: Settings) -> SweepSettings:
    scorer, optimizer = _models(s)
    problem = ProblemSettings(
        train_fraction=s["train_fraction"],
        validation_fraction=s["validation_fraction"],
        split_seed=s["split_seed"],
        position=s["position"],
        qa_framing=qa_framing(s, s["position"]),
        starting=tuple(s["start"]) if s["start"] else None,
        test_limit=s["test_limit"],
        errors=error_policy(s),
    )
    evaluate = None
    if s["evaluate_only"]:
        evaluate = EvaluateOnly(
            tuple(_instructions(s)), split=s["split"], grading=s["grading"], protocol=s["protocol"]
        )
    return SweepSettings(
        patterns=tuple(s["tasks"] or ()),
        scorer=scorer,
        optimizer=optimizer,
        optimize=None if s["evaluate_only"] else configs(s)[0],
        problem=problem,
        evaluate=evaluate,
        include_variants=bool(s["include_variants"]),
        data_dir=s["data_dir"],
        max_parallel_tasks=s["max_parallel_tasks"],
        batch=batch_settings(s) if s["batch"] else None,
    )


def _stored_options(s: Settings, settings: SweepSettings) -> dict[str, Any]:
    """The resolved options for a later `--resume` (instructions inlined, secrets withheld)."""
    stored = {k: v for k, v in s.values.items() if k not in _NOT_STORED}
    stored["tasks"] = list(settings.patterns)
    stored["task"] = None
    if settings.evaluate is not None:
        stored["instruction"] = list(settings.evaluate.instructions)
        stored["instructions_file"] = None
    for dest in _URLS:
        urls = stored.get(dest)
        urls = [urls] if isinstance(urls, str) else urls or []
        if any(isinstance(url, str) and redact_url(url) != url for url in urls):
            stored[dest] = WITHHELD
    return stored


def block_lines(p: SweepProgress) -> list[str]:
    """One line per running task and a totals line: what both displays show."""
    lines = []
    for live in p.running:
        where = f"step {live.step}/{live.steps}" if live.step is not None else "step -"
        if live.pairs_total is not None:
            where = f"pairs {live.pairs_done}/{live.pairs_total}"
        best = f"{100 * live.best:.1f}%" if live.best is not None else "-"
        lines.append(f"  {live.task}: {where}  best {best}  calls {live.calls}")
    t = p.totals
    left = []
    if p.budget_left_usd is not None:
        left.append(f"${p.budget_left_usd:.4f}")
    if p.budget_left_tokens is not None:
        left.append(f"{p.budget_left_tokens} tokens")
    counts = " ".join(f"{k} {v}" for k, v in sorted(p.counts.items()))
    lines.append(
        f"totals: {counts} | calls {t.calls} ({p.rate_calls_per_s:.1f}/s)  cache hits "
        f"{t.cache_hits}  429s {t.n429}  cost ${t.cost_usd:.4f}  budget left "
        f"{', '.join(left) or 'unlimited'}"
    )
    return lines


def event_line(event: SweepEvent) -> str | None:
    """The line a task's start or end gets (None for progress snapshots)."""
    if isinstance(event, TaskStarted):
        return f"started {event.task} ({'resumed' if event.resumed else 'new'})"
    if isinstance(event, TaskFinished):
        why = f": {event.reason}" if event.reason else ""
        return f"{event.status} {event.task}{why}"
    return None


class LinePrinter:
    """Plain progress lines on a stream (a pipe, a file, CI logs): task starts and ends as
    they happen, and every `every` seconds one line per running task and a totals line."""

    def __init__(self, every: float, stream: Any = None) -> None:
        self.every = every
        self.stream = stream or sys.stderr
        self._last = -float("inf")

    def __call__(self, event: SweepEvent) -> None:
        line = event_line(event)
        if line is not None:
            self._line(line)
        elif isinstance(event, SweepProgress):
            now = time.monotonic()
            if event.final or now - self._last >= 0.9 * self.every:
                self._last = now
                for text in block_lines(event):
                    self._line(text)

    def close(self) -> None:
        """Nothing to tidy up: every line is already written."""

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class LiveBoard:
    """On a terminal: the running tasks and the totals redrawn in place (rich), task starts
    and ends printed above them as they happen."""

    def __init__(self, stream: Any) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self._live = Live(
            Text(""),
            console=Console(file=stream, highlight=False),
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def __call__(self, event: SweepEvent) -> None:
        line = event_line(event)
        if line is not None:
            self._live.console.print(line, markup=False, highlight=False)
        elif isinstance(event, SweepProgress):
            text = self._text("\n".join(block_lines(event)), no_wrap=True, overflow="ellipsis")
            self._live.update(text, refresh=True)

    def close(self) -> None:
        self._live.stop()


# On a terminal the display is redrawn this often (seconds); --progress-every is for lines.
LIVE_EVERY_S = 1.0


def _summary(result: SweepResult) -> None:
    for t in result.tasks:
        best = ""
        if t.result is not None and t.result.best is not None:
            best = f"  best train {100 * t.result.best.score:.1f}%"
        why = f"  ({t.reason})" if t.reason else ""
        print(f"{t.status:<8} {t.task}{best}{why}")
    tot = result.totals
    print(
        f"calls={tot.calls} cache_hits={tot.cache_hits} 429s={tot.n429} "
        f"tokens={tot.tokens_in}+{tot.tokens_out} cost=${tot.cost_usd:.4f} wall={tot.wall_s:.1f}s"
    )
    print(f"sweep directory: {result.directory}")


async def _run(
    s: Settings, settings: SweepSettings, run_dir: Path, names: list[str]
) -> tuple[SweepResult, list[str]]:
    """The sweep and its plan-vs-bill lines (its plan line is printed before it starts)."""
    info = {
        "cli": _stored_options(s, settings),
        "cache_dir": None if s["no_cache"] else s["cache_dir"],
        "cache": cache_label(s["cache"]),  # a Redis URL's password masked
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    live = sys.stderr.isatty()
    display = LiveBoard(sys.stderr) if live else LinePrinter(s["progress_every"])
    every = min(s["progress_every"], LIVE_EVERY_S) if live else s["progress_every"]
    try:
        async with engine_from_settings(s) as engine:
            plans: list[TaskPlan] = []
            try:
                plans = plan_sweep(engine, settings, names)
            except OproError:  # a task that cannot be planned fails in the sweep, alone
                plans = []
            if plans:
                print(plan_lines(plans)[-1], file=sys.stderr, flush=True)
            if s["ray"] is not None:  # the nodes' models are not this engine's: no bill lines
                return await _on_ray(s, engine, settings, run_dir, display, every, info), []
            result = await sweep(
                engine,
                settings,
                run_dir=run_dir,
                resume=s["resume"],
                on_event=display,
                progress_every=every,
                info=info,
            )
            return result, _bill(engine, plans)
    finally:
        display.close()


def plan_lines(plans: list[TaskPlan]) -> list[str]:
    """One line per task and the sweep's total: calls, expected cost, worst case."""
    lines = []
    for tp in plans:
        run = RunPlan(tp.scorer, optimizer=tp.optimizer, optimizer_cost_usd=_est(tp.optimizer))
        p = tp.scorer
        extra = f" + {tp.optimizer.calls:,} optimizer answers" if tp.optimizer else ""
        lines.append(
            f"  {tp.task}: {p.calls:,} calls to make ({p.cached:,} cached){extra}; "
            f"{run.cost_text()}; output: {p.output_source or 'nothing to call'}"
        )
    scorer = total_plan([tp.scorer for tp in plans])
    optimizers = [tp.optimizer for tp in plans if tp.optimizer is not None]
    optimizer = total_plan(optimizers) if optimizers else None
    run = RunPlan(scorer, optimizer=optimizer, optimizer_cost_usd=_est(optimizer))
    head = "sweep plan (at most)" if optimizer is not None else "sweep plan"
    extra = f" + {optimizer.calls:,} optimizer answers" if optimizer else ""
    lines.append(
        f"{head}: {scorer.pairs:,} pairs, {scorer.calls:,} calls to make{extra}; {run.cost_text()}"
    )
    return lines


def _est(plan: Any) -> float | None:
    return 0.0 if plan is None else plan.est_cost_usd


async def _dry_run(s: Settings, settings: SweepSettings, names: list[str]) -> list[str]:
    async with engine_from_settings(s) as engine:
        return plan_lines(plan_sweep(engine, settings, names))


def _bill(engine: Any, plans: list[TaskPlan]) -> list[str]:
    """Plan vs bill of a finished sweep: per role, at the plans' cost per call."""
    rows = []
    for label, priority, role_plans in (
        ("scorer plan vs bill", 1, [tp.scorer for tp in plans]),
        ("optimizer plan vs bill", 0, [tp.optimizer for tp in plans if tp.optimizer]),
    ):
        models = [m for m in engine.models if m.priority == priority]
        if not models or not role_plans:
            continue
        billed = sum((m.stats.spend for m in models), Spend())
        rows.append((label, total_plan(role_plans), billed, models[0]))
    return plan_vs_bill(*rows)


def ray_options(s: Settings) -> Any:
    """`--ray`'s `opro.cluster.RayOptions` (a bad address is a `SettingsError`)."""
    from opro.cluster import RayOptions

    return RayOptions(
        address=s["ray"],
        cache=s["cache"] or s["cache_dir"],
        use_cache=not s["no_cache"],
        num_cpus=s["ray_cpus"],
    )


async def _on_ray(
    s: Settings,
    engine: Engine,
    settings: SweepSettings,
    run_dir: Path,
    on_event: Any,
    every: float,
    info: dict[str, Any],
) -> SweepResult:
    """The sweep with its tasks on a Ray cluster (`opro.cluster`); each node opens the
    cache --cache-dir names (a directory every node can reach, or a shared backend)."""
    from opro.cluster import ray_sweep

    return await ray_sweep(
        engine,
        settings,
        run_dir=run_dir,
        options=ray_options(s),
        resume=s["resume"],
        on_event=on_event,
        progress_every=every,
        info=info,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """`opro sweep`: 0 all done, 1 a task failed, 2 user error, 3 stopped (resumable)."""
    s = _settings(args)
    check_batch_scorer(s)
    settings = sweep_settings(s)
    if s["ray"] is not None:
        if s["batch"]:
            raise UsageError("--batch with --ray: a batch is sent from one place; drop one of them")
        ray_options(s)  # a bad --ray value is refused before anything starts
    if s["run_dir"] is None:
        run_dir = Path("opro-sweeps") / time.strftime("%Y%m%d-%H%M%S")
    else:
        run_dir = Path(s["run_dir"])
    if s["resume"]:
        names = [t.task for t in read_record(run_dir).tasks]
    else:  # a bad pattern fails before the engine creates its cache
        names = expand_tasks(
            settings.patterns, data_dir=s["data_dir"], include_variants=settings.include_variants
        )
    if s["calibrate"]:
        raise UsageError(
            "--calibrate is not available for sweeps yet: calibrate a task with opro evaluate "
            "or opro optimize (same cache), then the sweep's plan uses those answers"
        )
    if s["dry_run"]:
        print(f"{len(names)} tasks ({settings.mode}): {' '.join(names)}")
        for line in asyncio.run(_dry_run(s, settings, names)):
            print(line)
        return 0
    try:
        result, bill = asyncio.run(_run(s, settings, run_dir, names))
    except (RunDirError, LedgerError) as exc:
        raise UsageError(str(exc)) from None
    _summary(result)
    for line in bill:
        print(line)
    if result.stopped in ("budget", "rate limit"):
        print(
            f"opro: sweep stopped ({result.stopped}); every unfinished task is resumable: "
            f"opro sweep --resume --run-dir {run_dir} (the budget is the sweep's total)",
            file=sys.stderr,
        )
        return 3
    return 0 if result.complete else 1
