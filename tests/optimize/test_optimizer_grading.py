"""`OptimizeConfig.grading`: the loop optimizes the accuracy it names and records both.

The problem here reports two accuracies that rank its solutions in opposite orders, so the
best solution, the meta-prompt's scores and the final table all show which one was used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model
from opro.engine.spend import Spend
from opro.optimize.candidates import check, extract
from opro.optimize.loop import OptimizeConfig, optimize
from opro.optimize.metaprompt import (
    InstructionPart,
    MetaPrompt,
    MetaPromptConfig,
    Scored,
    build_meta_prompt,
)
from opro.optimize.problem import SolutionScore, SplitName
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage

STRICT = {"Short.": 0.2, "A much longer start.": 0.6, "Proposed text.": 0.41}


class TwoGradings:
    """Strict accuracy from a table; reference accuracy = 1 - strict (opposite ranking)."""

    higher_is_better = True
    splits: frozenset[SplitName] = frozenset({"train", "test"})

    def describe(self) -> dict[str, Any]:
        return {"kind": "two-gradings"}

    def initial_solutions(self) -> list[str]:
        return ["Short.", "A much longer start."]

    def baselines(self) -> list[str]:
        return []

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt:
        return build_meta_prompt(history, InstructionPart(()), cfg, rng)

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        return extract(answer, cfg.style)

    def check(self, candidate: str) -> tuple[str, str | None]:
        return check(candidate)

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        out = []
        for s in solutions:
            strict = STRICT[s] if split == "train" else STRICT[s] / 2
            by = {"strict": strict, "reference": round(1 - strict, 6)}
            out.append(
                SolutionScore(strict, spend=Spend(calls=1), by_grading=by, truncated=len(s) % 3)
            )
        return out


class Proposer(Provider):
    name = "proposer"

    def __init__(self) -> None:
        super().__init__("proposer")
        self.prompts: list[str] = []

    async def complete(self, request: Request) -> Completion:
        self.prompts.append(request.as_text())
        texts = ("[Proposed text.]",) * request.n
        return Completion(texts, Usage(10, 10), ("stop",) * request.n)

    @property
    def supports_n(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("grading", "best", "shown"),
    [("strict", "A much longer start.", "\n60\n"), ("reference", "Short.", "\n80\n")],
)
async def test_the_loop_optimizes_the_named_grading(
    tmp_path: Path, grading: Any, best: str, shown: str
) -> None:
    proposer = Proposer()
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        optimizer = Model(
            proposer,
            limiter=ConnectionLimiter(LimitConfig()),
            retry=engine.retry,
            cache=engine.cache,
            decoding=Decoding(max_tokens=64),
        )
        cfg = OptimizeConfig(steps=1, candidates_per_step=2, test_top=1, grading=grading)
        result = await optimize(TwoGradings(), optimizer, cfg, run_dir=tmp_path / "run")
    assert result.best is not None and result.best.solution == best
    assert shown in proposer.prompts[0]  # the meta-prompt shows the chosen accuracy
    row = result.final[0]
    assert row.solution == best and row.accuracy is not None and row.accuracy_reference
    chosen = row.accuracy if grading == "strict" else row.accuracy_reference
    assert (row.train, row.test) == (chosen["train"], chosen["test"])
    assert row.truncated == {"train": len(best) % 3, "test": len(best) % 3}
    saved = result.to_dict()["solutions"]
    assert {s["solution"]: (s["accuracy"], s["accuracy_reference"]) for s in saved} == {
        s: (v, round(1 - v, 6)) for s, v in STRICT.items()
    }


def test_grading_is_checked() -> None:
    with pytest.raises(ValueError, match="grading must be one of strict, reference"):
        OptimizeConfig(grading="lenient")  # type: ignore[arg-type]
