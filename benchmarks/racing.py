"""What racing (`--racing`) saves, and how often it changes what a run sees or picks.

Each comparison runs the same seeded OPRO run twice, with full evaluation and with racing,
and reports scorer pairs saved (per step and per run), the steps whose meta-prompt differs
(the shown set, the exemplars, so every later proposal), and whether the final table (the
top `test_top` and the best) differs.

* `simulated`: many seeds on the models of `opro.testing.known_accuracy` (each instruction
  has a known accuracy, uniform in [0.2, 0.9]; the optimizer proposes 8 instructions drawn
  from the meta-prompt's hash), scored in-process by the same rule (`KnownAccuracyProblem`,
  no engine call) so a seed takes a fraction of a second. 200 training examples, 8
  candidates per step, the paper's meta-prompt (best 20 shown), top 3 kept.
* `server`: a few seeds through the real engine over HTTP on the fake OpenAI server with the
  same responder; counts what the server answered.
* `embedded`: one short run on `local/smollm2-135m` (both roles; slow, so small: 30 training
  examples, 1 step of 4 candidates raced against the starting instruction: 1 shown, top 1).
  Both runs share a cache, so the racing run re-sends nothing; pairs scored (calls + cache
  hits) is the cost measure there.

Usage: python benchmarks/racing.py [--seeds 100] [--steps 30] [--server-seeds 2]
       [--embedded] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model, Price
from opro.engine.spend import Spend
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import MetaPromptConfig
from opro.optimize.problem import PromptProblem, SolutionScore, SplitName
from opro.optimize.records import StepRecord
from opro.optimize.runlog import read_steps
from opro.tasks import load_task
from opro.tasks.types import Example
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig
from opro.testing.known_accuracy import (
    HIGH,
    LOW,
    KnownAccuracyProvider,
    answers_right,
    parity_task,
    responder,
)


class KnownAccuracyProblem(PromptProblem):
    """A `PromptProblem` scored by `answers_right` in-process; `pairs` counts pairs scored."""

    pairs = 0
    spread = (LOW, HIGH)

    async def _score_on(
        self,
        solutions: Sequence[str],
        examples: Sequence[Example],
        split: SplitName,
        indices: Sequence[int] | None = None,
    ) -> list[SolutionScore]:
        out = []
        for solution in solutions:
            wrong = [
                i if indices is None else indices[i]
                for i, ex in enumerate(examples)
                if not answers_right(solution, ex.input, self.spread)
            ]
            n = len(examples)
            correct = n - len(wrong)
            self.pairs += n
            detail: dict[str, Any] = {
                "correct": correct,
                "correct_reference": correct,
                "graded": n,
                "n": n,
            }
            if split == "train":
                detail["wrong"] = sorted(wrong)
            accuracy = correct / n
            by_grading = {"strict": accuracy, "reference": accuracy}
            out.append(
                SolutionScore(accuracy, Spend(calls=n), detail=detail, by_grading=by_grading)
            )
        return out


def loop_config(steps: int, seed: int, racing: bool, **changes: Any) -> OptimizeConfig:
    meta = changes.pop("meta", MetaPromptConfig())
    return OptimizeConfig(
        steps=steps, candidates_per_step=8, seed=seed, meta=meta, racing=racing, **changes
    )


def step_pairs(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """Training pairs scored per step (optimizer calls aside)."""
    return [
        sum(int(c.get("calls", 0)) + int(c.get("cache_hits", 0)) for c in r["candidates"]
            if c["status"] in ("start", "new", "raced"))
        for r in records
    ]  # fmt: skip


def compare(
    ra: Sequence[Mapping[str, Any]], rb: Sequence[Mapping[str, Any]], a: Any, b: Any
) -> dict[str, Any]:
    """Full-evaluation records and result (ra, a) against racing's (rb, b)."""
    full_steps, fast_steps = step_pairs(ra), step_pairs(rb)
    return {
        "full_pairs": sum(full_steps),
        "racing_pairs": sum(fast_steps),
        "full_steps": full_steps,
        "racing_steps": fast_steps,
        "raced": sum(c["status"] == "raced" for r in rb for c in r["candidates"]),
        "meta_prompt_differs_at": [
            x["step"]
            for x, y in zip(ra, rb, strict=False)
            if x.get("meta_prompt") != y.get("meta_prompt")
        ],
        "final_differs": [r.solution for r in a.final] != [r.solution for r in b.final],
        "best_differs": _best(a) != _best(b),
    }


def _best(result: OptimizationResult) -> str | None:
    return result.best.solution if result.best else None


async def run_once(
    problem: PromptProblem, optimizer: Model, cfg: OptimizeConfig
) -> tuple[OptimizationResult, list[StepRecord]]:
    """A run with no run directory (nothing to fsync); its records come from `on_step`."""
    records: list[StepRecord] = []
    result = await optimize(problem, optimizer, cfg, on_step=lambda i: records.append(i.record))
    return result, records


def known_model(engine: Engine) -> Model:
    return Model(
        KnownAccuracyProvider(),
        limiter=ConnectionLimiter(LimitConfig()),
        retry=engine.retry,
        cache=engine.cache,
        price=Price(0.0, 0.0),
        decoding=Decoding(max_tokens=256),
    )


async def simulated(
    seeds: int, steps: int, root: Path, spread: tuple[float, float]
) -> list[dict[str, Any]]:
    task = load_task(str(parity_task(root / "task.jsonl", 250)))
    rows = []
    for seed in range(seeds):
        runs, pairs = {}, {}
        for racing in (False, True):
            async with Engine(use_cache=False) as engine:
                optimizer = known_model(engine)
                problem = KnownAccuracyProblem(
                    engine, optimizer, task, train_fraction=0.8, test_limit=10
                )
                problem.spread = spread
                runs[racing] = await run_once(problem, optimizer, loop_config(steps, seed, racing))
                pairs[racing] = problem.pairs
        (a, ra), (b, rb) = runs[False], runs[True]
        row = compare(ra, rb, a, b)
        rows.append({"seed": seed, "run_full": pairs[False], "run_racing": pairs[True], **row})
    return rows


async def server(seeds: int, steps: int, root: Path) -> list[dict[str, Any]]:
    task = load_task(str(parity_task(root / "task.jsonl", 250)))
    rows = []
    async with FakeOpenAIServer(FakeServerConfig(responder=responder)) as fake:
        for seed in range(seeds):
            runs, paid = {}, {}
            for racing in (False, True):
                before = fake.accepted
                async with Engine(cache_dir=root / f"cache-{seed}-{racing}") as engine:
                    model = engine.model(
                        "openai/fake-model", base_url=fake.base_url, price=Price(0.0, 0.0)
                    )
                    problem = PromptProblem(engine, model, task, train_fraction=0.8, test_limit=10)
                    runs[racing] = await run_once(problem, model, loop_config(steps, seed, racing))
                paid[racing] = fake.accepted - before
            (a, ra), (b, rb) = runs[False], runs[True]
            row = compare(ra, rb, a, b)
            rows.append({"seed": seed, "run_full": paid[False], "run_racing": paid[True], **row})
    return rows


def embedded(root: Path) -> dict[str, Any]:
    from opro.cli.main import main

    common = [
        "optimize", "--task", "synthetic/boolean_expressions", "--train-fraction", "0.15",
        "--steps", "1", "--candidates-per-step", "4", "--max-shown", "1", "--test-top", "1",
        "--test-limit", "5", "--cache-dir", str(root / "cache-embedded"),
    ]  # fmt: skip
    started = time.perf_counter()
    assert main([*common, "--run-dir", str(root / "emb-full")]) == 0
    full_s = time.perf_counter() - started
    assert main([*common, "--run-dir", str(root / "emb-racing"), "--racing"]) == 0
    a = orjson.loads((root / "emb-full" / "results.json").read_bytes())
    b = orjson.loads((root / "emb-racing" / "results.json").read_bytes())
    ra, _ = read_steps(root / "emb-full" / "steps.jsonl")
    rb, _ = read_steps(root / "emb-racing" / "steps.jsonl")
    full_steps, fast_steps = step_pairs(ra), step_pairs(rb)
    return {
        "train_examples": a["run"]["problem"]["train"]["n"],
        "full_pairs": sum(full_steps),
        "racing_pairs": sum(fast_steps),
        "full_steps": full_steps,
        "racing_steps": fast_steps,
        "raced": sum(c["status"] == "raced" for r in rb for c in r["candidates"]),
        "meta_prompt_differs_at": [
            x["step"]
            for x, y in zip(ra, rb, strict=False)
            if x.get("meta_prompt") != y.get("meta_prompt")
        ],
        "final_differs": [r["solution"] for r in a["final"]] != [r["solution"] for r in b["final"]],
        "full_run_s": round(full_s, 1),
    }


def summary(rows: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    saved = [1 - r["racing_pairs"] / r["full_pairs"] for r in rows]
    run_saved = [1 - r["run_racing"] / r["run_full"] for r in rows]
    per_step = []
    for s in range(1, steps + 1):
        full = sum(r["full_steps"][s] for r in rows if len(r["full_steps"]) > s)
        fast = sum(r["racing_steps"][s] for r in rows if len(r["racing_steps"]) > s)
        per_step.append(round(1 - fast / full, 3) if full else None)
    n = len(rows)
    return {
        "seeds": n,
        "pairs_saved_mean": round(statistics.mean(saved), 3),
        "pairs_saved_min": round(min(saved), 3),
        "pairs_saved_max": round(max(saved), 3),
        "pairs_saved_by_step": per_step,
        "run_calls_saved_mean": round(statistics.mean(run_saved), 3),
        "meta_prompts_differ_in_seeds": sum(bool(r["meta_prompt_differs_at"]) for r in rows),
        "final_table_differs_in_seeds": sum(r["final_differs"] for r in rows),
        "best_differs_in_seeds": sum(r["best_differs"] for r in rows),
        "final_unchanged_share": round(1 - sum(r["final_differs"] for r in rows) / n, 3),
    }


def show(title: str, s: dict[str, Any]) -> None:
    print(f"{title}: {s['seeds']} seeds")
    print(
        f"  scorer pairs saved: mean {100 * s['pairs_saved_mean']:.1f}% "
        f"(min {100 * s['pairs_saved_min']:.1f}%, max {100 * s['pairs_saved_max']:.1f}%)"
    )
    print(f"  whole run (final table included): {100 * s['run_calls_saved_mean']:.1f}% saved")
    by_step = " ".join("-" if x is None else f"{100 * x:.0f}" for x in s["pairs_saved_by_step"])
    print(f"  saved by step (%): {by_step}")
    print(
        f"  meta-prompts differ in {s['meta_prompts_differ_in_seeds']} seeds; final table "
        f"differs in {s['final_table_differs_in_seeds']}, best in {s['best_differs_in_seeds']} "
        f"(final unchanged in {100 * s['final_unchanged_share']:.1f}% of seeds)"
    )


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.seeds:
            started = time.perf_counter()
            low, high = args.spread
            rows = await simulated(args.seeds, args.steps, root, (low, high))
            out["simulated"] = {"summary": summary(rows, args.steps), "rows": rows}
            title = f"simulated, accuracies in [{low}, {high}], {args.steps} steps x 8"
            show(title, out["simulated"]["summary"])
            print(f"  ({time.perf_counter() - started:.0f}s)")
        if args.server_seeds:
            rows = await server(args.server_seeds, args.server_steps, root)
            out["server"] = {"summary": summary(rows, args.server_steps), "rows": rows}
            show(f"fake server over HTTP, {args.server_steps} steps", out["server"]["summary"])
            for r in rows:
                print(
                    f"  seed {r['seed']}: the server answered {r['run_full']:,} requests "
                    f"(full) and {r['run_racing']:,} (racing)"
                )
        if args.embedded:
            out["embedded"] = await asyncio.to_thread(embedded, root)
            e = out["embedded"]
            print(
                f"embedded smollm2-135m, {e['train_examples']} training examples, 1 step x 4: "
                f"{e['full_pairs']} -> {e['racing_pairs']} training pairs, {e['raced']} raced, "
                f"meta-prompts differ at {e['meta_prompt_differs_at'] or 'no step'}, "
                f"final differs: {e['final_differs']}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--server-seeds", type=int, default=2)
    parser.add_argument("--server-steps", type=int, default=10)
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument(
        "--spread", type=float, nargs=2, default=(LOW, HIGH), metavar=("LOW", "HIGH")
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = asyncio.run(amain(args))
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
