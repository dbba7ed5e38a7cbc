"""EvoPrompt's GA and DE strategies: selection and update rules, parsing, resume and budget.

The rules are checked on a problem whose every instruction has a known accuracy (a table),
with a scripted optimizer whose answers are a pure function of the prompt and the sample
index; resume and the budget run through `PromptProblem` on the `simulated` scorer, as the
OPRO loop's own tests do.
"""

from __future__ import annotations

import hashlib
import random
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from opro.engine.budget import Budget, BudgetExceeded
from opro.engine.engine import Engine
from opro.engine.limits import ConnectionLimiter, LimitConfig
from opro.engine.model import Decoding, Model
from opro.engine.spend import Spend
from opro.errors import SettingsError
from opro.optimize.candidates import check
from opro.optimize.evoprompt import de_survivors, ga_survivors, roulette
from opro.optimize.evoprompt_prompts import final_prompt
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize, step_seed
from opro.optimize.metaprompt import MetaPrompt, MetaPromptConfig, Scored
from opro.optimize.problem import PromptProblem, SolutionScore, SplitName
from opro.optimize.records import StepRecord, step_record_problem
from opro.optimize.runlog import read_steps
from opro.optimize.strategies import STRATEGIES
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage
from opro.tasks import load_task
from opro.tasks.types import Example

# Known accuracies, all distinct so "the best N" is one set.
TABLE = {f"Instruction {name}.": (i + 1) / 20 for i, name in enumerate("ABCDEFGHIJKLMNOPQRS")}
POOL = list(TABLE)
Script = Callable[[str, int], str]


def pool_script(prompt: str, sample: int) -> str:
    h = int(hashlib.sha256(f"{sample}|{prompt}".encode()).hexdigest(), 16)
    return f"Step 1: ...\nStep 2: ...\nFinal: <prompt>{POOL[h % len(POOL)]}</prompt>"


class ScriptedOptimizer(Provider):
    """Answers with `script(prompt, sample)`, one sample per n; records every request."""

    name = "scripted"

    def __init__(self, script: Script = pool_script) -> None:
        super().__init__("optimizer")
        self.script = script
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        texts = tuple(
            self.script(request.as_text(), (request.seed or 0) + i) for i in range(request.n)
        )
        return Completion(texts, Usage(100, 10 * len(texts)), ("stop",) * len(texts))

    @property
    def supports_n(self) -> bool:
        return True


class TableProblem:
    """Instructions scored from `TABLE` (0 for anything else); counts what it scores."""

    higher_is_better = True
    splits: frozenset[SplitName] = frozenset({"train"})

    def __init__(self, starting: Sequence[str]) -> None:
        self.starting = list(starting)
        self.scored: list[str] = []

    def describe(self) -> dict[str, Any]:
        return {"kind": "table", "starting": self.starting}

    def initial_solutions(self) -> list[str]:
        return list(self.starting)

    def baselines(self) -> list[str]:
        return []

    def examples(self, name: SplitName) -> list[Example]:
        return [Example(input=f"question {i}", target=str(i % 2 == 0)) for i in range(8)]

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt:
        raise AssertionError("the EvoPrompt strategies write their own prompts")

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        raise AssertionError("the EvoPrompt strategies read <prompt> tags")

    def check(self, candidate: str) -> tuple[str, str | None]:
        return check(candidate)

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        self.scored += solutions
        return [SolutionScore(TABLE.get(s, 0.0), spend=Spend(calls=1)) for s in solutions]


def optimizer_model(engine: Engine, provider: Provider) -> Model:
    return Model(
        provider,
        limiter=ConnectionLimiter(LimitConfig()),
        retry=engine.retry,
        cache=engine.cache,
        decoding=Decoding(max_tokens=64),
    )


async def run_table(
    tmp_path: Path,
    strategy: str,
    starting: Sequence[str] = ("",),
    provider: ScriptedOptimizer | None = None,
    **cfg: Any,
) -> tuple[OptimizationResult, TableProblem, ScriptedOptimizer, list[dict[str, Any]]]:
    provider = provider or ScriptedOptimizer()
    problem = TableProblem(starting)
    cfg.setdefault("steps", 4)
    cfg.setdefault("test_top", 0)
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        result = await optimize(
            problem,
            optimizer_model(engine, provider),
            OptimizeConfig(strategy=strategy, **cfg),
            run_dir=tmp_path / "run",
        )
    return result, problem, provider, steps_of(tmp_path / "run")


def steps_of(run_dir: Path) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], read_steps(run_dir / "steps.jsonl")[0])


def score(text: str) -> float:
    return TABLE.get(text, 0.0)


def children(record: dict[str, Any]) -> list[tuple[str, float] | None]:
    """Each ask's child (text, score) from the record, None where it held no prompt."""
    out: list[tuple[str, float] | None] = [None] * len(record["answers"])
    for c in record["candidates"]:
        if c["status"] in ("new", "duplicate"):
            out[c["answer"]] = (c["canonical"], c["score"])
    return out


# -- the rules -----------------------------------------------------------------------------


def test_the_strategy_names_are_public() -> None:
    assert STRATEGIES == ("opro", "evoprompt-ga", "evoprompt-de")
    assert OptimizeConfig().strategy == "opro"
    with pytest.raises(SettingsError, match="unknown strategy 'evoprompt'"):
        OptimizeConfig(strategy="evoprompt")
    for bad in (1, 0, float("nan"), True):
        with pytest.raises(SettingsError, match="population"):
            OptimizeConfig(population=bad)  # type: ignore[arg-type]
    assert OptimizeConfig(candidates_per_step=4).population_size == 4
    assert OptimizeConfig(candidates_per_step=4, population=10).population_size == 10


def test_roulette_draws_in_proportion_to_the_score() -> None:
    members = [("a", 0.1), ("b", 0.3), ("c", 0.6), ("zero", 0.0)]
    rng = random.Random(0)
    draws = 40_000
    first = Counter(roulette(members, rng, 1)[0] for _ in range(draws))
    assert first[3] == 0  # a member scoring 0 is never drawn while another scores more
    for i, expected in enumerate((0.1, 0.3, 0.6)):
        assert first[i] / draws == pytest.approx(expected, abs=0.01)
    # Two parents are distinct: the second is drawn from the rest in proportion to theirs.
    pairs = [roulette(members, rng, 2) for _ in range(draws)]
    assert all(a != b for a, b in pairs)
    after_c = Counter(b for a, b in pairs if a == 2)
    total = sum(after_c.values())
    assert after_c[0] / total == pytest.approx(0.25, abs=0.02)  # 0.1 / (0.1 + 0.3)
    assert after_c[1] / total == pytest.approx(0.75, abs=0.02)


def test_roulette_with_every_score_zero_is_uniform() -> None:
    members = [(str(i), 0.0) for i in range(4)]
    rng = random.Random(1)
    drawn = Counter(roulette(members, rng, 1)[0] for _ in range(20_000))
    assert set(drawn) == {0, 1, 2, 3}
    assert all(n / 20_000 == pytest.approx(0.25, abs=0.02) for n in drawn.values())
    # The only positive member is drawn first, then the second among the zeros at random.
    one = [("x", 0.0), ("y", 0.5), ("z", 0.0)]
    pairs = Counter(tuple(roulette(one, rng, 2)) for _ in range(2_000))
    assert set(pairs) == {(1, 0), (1, 2)}
    assert roulette([("only", 0.4)], rng, 2) == [0]


def test_survivor_rules() -> None:
    parents = [("p", 0.5), ("q", 0.2), ("r", 0.4)]
    kids = [("k", 0.3), None, ("q", 0.2), ("m", 0.6)]
    assert ga_survivors(parents, kids, 3) == ["m", "p", "r"]
    assert ga_survivors(parents, [("k", 0.5)], 1) == ["p"]  # a parent wins a tie
    # DE: member i meets child i only; a worse or equal child never replaces it, nor a child
    # that is already a member.
    assert de_survivors(parents, [("a", 0.6), ("b", 0.1), ("q", 0.2)]) == ["a", "q", "r"]
    assert de_survivors(parents, [("a", 0.5), ("b", 0.3), None]) == ["p", "b", "r"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("<prompt>Be exact.</prompt>", "Be exact."),
        ("Step 1: <prompt>a</prompt> ... Final: <PROMPT>\n Be exact. \n</Prompt>", "Be exact."),
        ("Crossover done. Final prompt: <prompt>Think, then answer.", "Think, then answer."),
        ("No tag at all.", None),
        ("<prompt>   </prompt>", None),
        ("", None),
        ("<prompt>__import__('os').system('x')</prompt>", "__import__('os').system('x')"),
    ],
)
def test_the_final_prompt_is_read_from_the_last_tag(answer: str, expected: str | None) -> None:
    assert final_prompt(answer) == expected


# -- the strategies in the loop ------------------------------------------------------------


async def test_ga_keeps_the_best_n_of_parents_and_children(tmp_path: Path) -> None:
    result, problem, provider, records = await run_table(
        tmp_path, "evoprompt-ga", starting=("", POOL[3]), candidates_per_step=4
    )
    start = records[0]
    # Two given, two induced from the task's examples, each from its own draw of them.
    assert [c["status"] for c in start["candidates"]][:2] == ["start", "start"]
    assert start["asks"] == 2 and len(start["answers"]) == 2
    assert all("Input: question" in p for p in start["meta_prompts"])
    assert start["meta_prompts"][0] != start["meta_prompts"][1]
    population = start["population"]
    assert len(population) == 4
    for record in records[1:]:
        assert len(record["answers"]) == 4 and len(record["parents"]) == 4
        assert record["seed"] == step_seed(0, record["step"])
        for parents, prompt in zip(record["parents"], record["meta_prompts"], strict=True):
            assert set(parents) <= set(population)
            assert all(f"<prompt>{p}</prompt>" in prompt for p in parents)
        pool = {text: score(text) for text in population}
        pool.update((c[0], c[1]) for c in children(record) if c is not None)
        best = sorted(pool, key=lambda t: -pool[t])[:4]
        assert record["population"] == best
        population = record["population"]
    assert result.best is not None and result.best.solution == population[0]
    # Every instruction was scored once: members and repeated children reuse their score.
    assert len(problem.scored) == len(set(problem.scored))
    assert len(provider.requests) == 2 + 4 * 4
    # The records are typed: every field is declared, and none is missing from a generation.
    declared = set(typing.get_type_hints(StepRecord))
    for record in records:
        assert step_record_problem(record) is None and set(record) <= declared
    missing = declared - set(records[1])
    assert missing == {"spend", "exemplars", "meta_prompt"}


async def test_de_never_replaces_a_member_with_a_worse_child(tmp_path: Path) -> None:
    _, problem, _, records = await run_table(
        tmp_path, "evoprompt-de", starting=(POOL[0], POOL[1], POOL[5]), steps=6, population=3
    )
    population = records[0]["population"]
    assert sorted(population) == sorted([POOL[0], POOL[1], POOL[5]])
    replaced = 0
    for record in records[1:]:
        kids = children(record)
        best = max(population, key=score)
        members = list(population)  # as the generation updates them, slot by slot
        for i, (member, after) in enumerate(zip(population, record["population"], strict=True)):
            parents = record["parents"][i]
            assert parents[0] == member and parents[1] == best
            assert member not in parents[2:] and parents[2] != parents[3]
            kid = kids[i]
            if kid is not None and kid[1] > score(member) and kid[0] not in members:
                assert after == kid[0]
                replaced += 1
            else:
                assert after == member
            members[i] = after
            assert score(after) >= score(member)
        population = record["population"]
    assert replaced > 0  # the scripted answers do improve some members
    assert len(problem.scored) == len(set(problem.scored))


async def test_answers_without_a_prompt_are_counted_and_change_nothing(tmp_path: Path) -> None:
    def script(prompt: str, sample: int) -> str:
        if "Input: question" in prompt:
            return pool_script(prompt, sample)
        return "I crossed them over." if sample % 2 else "<prompt>  </prompt>"

    result, _, _, records = await run_table(
        tmp_path, "evoprompt-de", provider=ScriptedOptimizer(script), steps=2, population=3
    )
    for record in records[1:]:
        assert record["extraction_failures"] == 3 == record["invalid"]
        assert {c["reason"] for c in record["candidates"]} == {"no candidate"}
        assert record["population"] == records[0]["population"]
    assert result.extraction_failures == 6


async def test_a_problem_without_enough_starts_or_examples_is_refused(tmp_path: Path) -> None:
    class NoExamples(TableProblem):
        examples = None  # type: ignore[assignment]

    async with Engine(cache_dir=tmp_path / "cache") as engine:
        with pytest.raises(SettingsError, match="give at least 4 starting solutions"):
            await optimize(
                NoExamples([""]),
                optimizer_model(engine, ScriptedOptimizer()),
                OptimizeConfig(strategy="evoprompt-ga", candidates_per_step=4, test_top=0),
            )


# -- resume and budget on the simulated scorer ---------------------------------------------

TASK = load_task("synthetic/boolean_expressions", size=60)
VOLATILE = {"wall_s", "calls", "cache_hits", "tokens_in", "tokens_out", "cost_usd", "totals"}


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


async def run_prompt(
    tmp_path: Path,
    cache: str,
    run_dir: Path,
    *,
    provider: ScriptedOptimizer | None = None,
    resume: bool = False,
    budget: Budget | None = None,
    models: list[Any] | None = None,
    **cfg: Any,
) -> tuple[OptimizationResult, Model, ScriptedOptimizer]:
    provider = provider or ScriptedOptimizer()
    async with Engine(cache_dir=tmp_path / cache, budget=budget) as engine:
        # One call at a time and short answers: a token budget then stops where it is set.
        scorer = engine.model(
            "simulated/scorer",
            limits=LimitConfig(max_concurrency=1),
            decoding=Decoding(max_tokens=16),
        )
        if models is not None:  # for a caller whose run raises
            models += [scorer, provider]
        problem = PromptProblem(engine, scorer, TASK)
        result = await optimize(
            problem,
            optimizer_model(engine, provider),
            OptimizeConfig(candidates_per_step=3, test_top=0, **cfg),
            run_dir=run_dir,
            resume=resume,
        )
    return result, scorer, provider


@pytest.mark.parametrize("strategy", ["evoprompt-ga", "evoprompt-de"])
async def test_resume_rebuilds_the_population_and_repays_nothing(
    tmp_path: Path, strategy: str
) -> None:
    straight, straight_scorer, straight_opt = await run_prompt(
        tmp_path, "c1", tmp_path / "a", strategy=strategy, steps=4
    )
    _, first_scorer, first_opt = await run_prompt(
        tmp_path, "c2", tmp_path / "b", strategy=strategy, steps=2
    )

    def broken(prompt: str, sample: int) -> str:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        await run_prompt(
            tmp_path, "c2", tmp_path / "b", provider=ScriptedOptimizer(broken), resume=True,
            strategy=strategy, steps=4,
        )  # fmt: skip
    resumed, resumed_scorer, resumed_opt = await run_prompt(
        tmp_path, "c2", tmp_path / "b", resume=True, strategy=strategy, steps=4
    )
    assert stable(steps_of(tmp_path / "b")) == stable(steps_of(tmp_path / "a"))
    assert stable(resumed.to_dict()) == stable(straight.to_dict())
    # Steps 3 and 4 asked 3 children each; steps 0-2 came from the log.
    assert len(resumed_opt.requests) == 6
    assert len(first_opt.requests) + len(resumed_opt.requests) == len(straight_opt.requests)
    assert first_scorer.stats.calls + resumed_scorer.stats.calls == straight_scorer.stats.calls


async def test_a_budget_stop_mid_generation_keeps_what_was_paid(tmp_path: Path) -> None:
    _, straight_scorer, straight_opt = await run_prompt(
        tmp_path, "c1", tmp_path / "a", strategy="evoprompt-ga", steps=3
    )
    records = steps_of(tmp_path / "a")
    scorer_tokens = [
        sum(c.get("tokens_in", 0) + c.get("tokens_out", 0) for c in r["candidates"])
        for r in records
    ]
    # Enough for steps 0 and 1 and about half of step 2's scoring.
    cap = scorer_tokens[0] + scorer_tokens[1] + scorer_tokens[2] // 2
    first: list[Any] = []
    with pytest.raises(BudgetExceeded):
        await run_prompt(
            tmp_path, "c2", tmp_path / "b", strategy="evoprompt-ga", steps=3,
            budget=Budget(max_tokens=cap), models=first,
        )  # fmt: skip
    first_scorer, first_opt = first
    assert [r["step"] for r in steps_of(tmp_path / "b")] == [0, 1]  # step 2 stopped
    # Everything up to step 2's children was asked (and paid) before the stop.
    assert len(first_opt.requests) == len(straight_opt.requests) - 3
    _, resumed_scorer, resumed_opt = await run_prompt(
        tmp_path, "c2", tmp_path / "b", strategy="evoprompt-ga", steps=3, resume=True
    )
    assert stable(steps_of(tmp_path / "b")) == stable(records)
    # Step 2's children come back from the cache, and so do its pairs scored before the stop.
    assert len(resumed_opt.requests) == 3  # step 3's children only
    assert len(first_opt.requests) + len(resumed_opt.requests) == len(straight_opt.requests)
    paid_before = sum(c.get("calls", 0) for r in records[:2] for c in r["candidates"])
    assert first_scorer.stats.calls > paid_before  # part of step 2's scoring was paid
    assert first_scorer.stats.calls + resumed_scorer.stats.calls == straight_scorer.stats.calls
