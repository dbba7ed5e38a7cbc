"""Racing through the OPRO loop, on in-process models with known per-instruction accuracies.

The same seeded run is made with and without racing: racing must pay fewer scorer calls,
record the stopped candidates as `raced` (partial score, examples graded, bound), keep them
out of the history, the meta-prompts and the final table, and otherwise change nothing the
optimizer saw. A run stopped mid-step resumes from the cache without paying again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from opro.engine.engine import Engine
from opro.engine.evaluate import EvaluationAborted
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model, Price
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import MetaPromptConfig
from opro.optimize.problem import PromptProblem
from opro.optimize.protocol import protocol_preset
from opro.optimize.records import StepRecord
from opro.optimize.runlog import read_steps as read_log
from opro.providers.errors import FatalError
from opro.providers.types import Completion, Request
from opro.tasks import load_task
from opro.testing.known_accuracy import (
    META_MARK,
    WORDS,
    KnownAccuracyProvider,
    latent_accuracy,
    parity_task,
)

META = MetaPromptConfig(max_shown=4, exemplars=2)


def known_model(engine: Engine, provider: KnownAccuracyProvider) -> Model:
    """Both roles on one in-process provider, on the engine's cache and budget."""
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig()),
        retry=engine.retry,
        cache=engine.cache,
        budget=engine.budget,
        price=Price(0.0, 0.0),
        decoding=Decoding(max_tokens=64),
    )


def config(racing: bool, steps: int = 5) -> OptimizeConfig:
    return OptimizeConfig(
        steps=steps, candidates_per_step=6, seed=3, meta=META, test_top=2, racing=racing
    )


async def run(
    tmp: Path,
    name: str,
    racing: bool,
    *,
    provider: KnownAccuracyProvider | None = None,
    resume: bool = False,
    cache: str | None = None,
    cfg: OptimizeConfig | None = None,
) -> tuple[OptimizationResult, KnownAccuracyProvider]:
    provider = provider or KnownAccuracyProvider()
    task = load_task(str(parity_task(tmp / "task.jsonl", 250)))
    async with Engine(cache_dir=tmp / (cache or f"cache-{name}")) as engine:
        model = known_model(engine, provider)
        problem = PromptProblem(engine, model, task, train_fraction=0.8, test_limit=10)
        result = await optimize(
            problem, model, cfg or config(racing), run_dir=tmp / name, resume=resume
        )
    return result, provider


def read_steps(run_dir: Path) -> list[StepRecord]:
    return read_log(run_dir / "steps.jsonl")[0]


def raced_entries(run_dir: Path) -> list[dict[str, Any]]:
    return [dict(c) for r in read_steps(run_dir) for c in r["candidates"] if c["status"] == "raced"]


def test_racing_pays_less_and_changes_nothing_the_optimizer_saw(tmp_path: Path) -> None:
    full, full_calls = asyncio.run(run(tmp_path, "full", False))
    raced, raced_calls = asyncio.run(run(tmp_path, "raced", True))
    assert raced_calls.calls < 0.8 * full_calls.calls
    stopped = raced_entries(tmp_path / "raced")
    assert stopped
    for c in stopped:
        assert c["graded"] < c["total"] == 200 and c["bound"] < c["threshold"]
        assert c["score"] == c["detail"]["correct"] / c["graded"]
        assert c["calls"] == c["graded"]  # paid only for the examples it was graded on
    # Never in the history, a meta-prompt listing or the final table...
    names = {c["canonical"] for c in stopped}
    assert not names & {h.solution for h in raced.history}
    assert not names & {row.solution for row in raced.final}
    for record in read_steps(tmp_path / "raced"):
        for name in names:
            assert f"text:\n{name}\nscore:" not in record.get("meta_prompt", "")
    # ... and each was rightly stopped: its full-set accuracy (not scored) is below the bar.
    train = {h.solution for h in full.history}
    for c in stopped:
        assert c["canonical"] in train  # the full run scored it
        known = next(h.score for h in full.history if h.solution == c["canonical"])
        assert known < c["threshold"]
    # The meta-prompts (so every proposal) and the final table are those of the full run.
    prompts = [r.get("meta_prompt") for r in read_steps(tmp_path / "full")]
    assert prompts == [r.get("meta_prompt") for r in read_steps(tmp_path / "raced")]
    assert [r.solution for r in full.final] == [r.solution for r in raced.final]
    assert full.best is not None and raced.best is not None
    assert (full.best.solution, full.best.score) == (raced.best.solution, raced.best.score)


class Repeating(KnownAccuracyProvider):
    """Once a meta-prompt lists `max_shown` instructions (racing can stop candidates), every
    optimizer answer also proposes the same weak instruction."""

    async def complete(self, request: Request) -> Completion:
        done = await super().complete(request)
        prompt = request.as_text()
        if META_MARK not in prompt or prompt.count("text:\n") < 4:
            return done
        texts = tuple(f"[{WEAK}] {t}" for t in done.texts)
        return Completion(texts, done.usage, done.finish_reasons)


WEAK = min(
    (" ".join(w).capitalize() + "." for w in itertools.permutations(WORDS[:8], 3)),
    key=latent_accuracy,
)


def test_a_raced_proposal_made_again_is_a_duplicate_not_scored_again(tmp_path: Path) -> None:
    assert latent_accuracy(WEAK) < 0.25
    asyncio.run(run(tmp_path, "raced", True, provider=Repeating()))
    seen = [
        (r["step"], c) for r in read_steps(tmp_path / "raced") for c in r["candidates"]
        if c.get("canonical") == WEAK
    ]  # fmt: skip
    (first_step, first), *rest = seen
    assert first["status"] == "raced"
    later = [c for step, c in rest if step > first_step]  # (the same step's copies aside)
    assert len(later) >= 2
    for c in later:
        assert c["status"] == "duplicate" and c["reason"] == "raced"
        assert c["duplicate_of_step"] == first_step and c["score"] is None


class Failing(KnownAccuracyProvider):
    """Fails for good at the `fail_at`-th scorer call (an outage that ends the session)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    async def complete(self, request: Request) -> Completion:
        if self.calls == self.fail_at:
            raise FatalError("the test's outage")
        return await super().complete(request)


def test_a_run_stopped_mid_step_resumes_without_paying_again(tmp_path: Path) -> None:
    _, paid = asyncio.run(run(tmp_path, "straight", True))
    # Stop inside step 3: after what steps 0-2 paid and part of step 3's rounds.
    steps = read_steps(tmp_path / "straight")
    upto = sum(r["totals"]["calls"] for r in steps[:3])
    fail_at = upto + steps[3]["totals"]["calls"] // 2
    with pytest.raises(EvaluationAborted):
        asyncio.run(run(tmp_path, "cut", True, provider=Failing(fail_at), cache="cache-cut"))
    assert [r["step"] for r in read_steps(tmp_path / "cut")] == [0, 1, 2]
    _, again = asyncio.run(run(tmp_path, "cut", True, resume=True, cache="cache-cut"))
    assert fail_at + again.calls == paid.calls  # nothing paid twice
    assert again.calls < paid.calls - upto
    assert [r.get("meta_prompt") for r in read_steps(tmp_path / "cut")] == [
        r.get("meta_prompt") for r in steps
    ]
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert cut["best"] == json.loads((tmp_path / "straight" / "results.json").read_text())["best"]
    paid_fields = {"calls", "cache_hits", "tokens_in", "tokens_out", "cost_usd"}

    def decisions(run_dir: Path) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in c.items() if k not in paid_fields} for c in raced_entries(run_dir)
        ]

    assert decisions(tmp_path / "cut") == decisions(tmp_path / "straight")


def test_racing_under_the_paper_protocol(tmp_path: Path) -> None:
    """The reference's listing rules (best 20, scores >= 0 for a non-GPT scorer) and grading.

    (Its extraction takes one candidate per answer, and these models give one answer per
    step, so the lenient extraction lets 8 a step through and racing start by step 3.)
    """
    meta = replace(protocol_preset("paper").meta, extraction="lenient")
    cfg = OptimizeConfig(
        steps=4, candidates_per_step=8, seed=1, meta=meta, protocol="paper",
        grading="reference", racing=True,
    )  # fmt: skip
    result, _ = asyncio.run(run(tmp_path, "paper", True, cfg=cfg))
    stopped = raced_entries(tmp_path / "paper")
    assert stopped  # from step 3 on, once 20 instructions are fully scored
    records = read_steps(tmp_path / "paper")
    assert {r["step"] for r in records if any(c["status"] == "raced" for c in r["candidates"])}
    for c in stopped:
        # Ranked by the reference grading: the bound is on its count, below the 20th best.
        assert c["score"] == c["accuracy_reference"] and c["bound"] < c["threshold"]
    ranked = sorted((h.score for h in result.history), reverse=True)
    assert all(c["threshold"] <= ranked[19] for c in stopped)
