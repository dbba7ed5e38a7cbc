"""EvoPrompt's genetic algorithm (GA) and differential evolution (DE) as `optimize` strategies.

From Guo et al. 2023 (arXiv 2309.08532); the prompts are in `evoprompt_prompts.py`. The
strategies run inside the OPRO loop's machinery (`loop._Loop`): the same vetting of
candidates, the same scoring fan-out through the engine (so a member's score is cached
like any instruction, and an instruction scored before is never paid for again), the same
step records, validation, budget and resume.

* Step 0 scores the starting instructions exactly as given; when there are fewer than the
  population size N, the optimizer writes the rest, one ask per missing member, each from
  its own draw of 5 training examples (an instruction-induction prompt; asked again, at
  most `RESAMPLE_ROUNDS` times, for members that came back invalid or duplicated). The
  population is the best N of what was scored.
* A GA generation makes N children: two parents drawn by roulette wheel (probability
  proportional to the score; uniform when every score is 0), each crossed over and
  mutated by the optimizer; the next population is the best N of parents and children.
* A DE generation makes one child per member p_i from two other random members, the best
  member and p_i itself; the child replaces p_i only if it scores higher.

Every step draws from its own `random.Random(step_seed(seed, step))` and records the
population it ends with (`population`, canonical texts; for DE in member order), so a
resumed run reads the population back from the log and repeats the very same draws, and
the optimizer's answers come back from the cache. A child whose answer holds no
<prompt> tag is recorded as an extraction failure, like an OPRO answer with no candidate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from opro.engine.spend import Spend
from opro.errors import SettingsError
from opro.optimize.evoprompt_prompts import de_prompt, final_prompt, ga_prompt, induction_prompt
from opro.optimize.loop import RESAMPLE_ROUNDS, _Entry, _Fresh, step_seed
from opro.optimize.records import (
    Candidate,
    RunTotals,
    StepRecord,
    no_candidate,
    optimizer_call,
)

if TYPE_CHECKING:
    from opro.engine.model import Generation
    from opro.optimize.loop import _Loop

# Training examples the optimizer sees when it writes starting prompts (as APE/EvoPrompt: 5).
INDUCTION_EXAMPLES = 5
# Children per step are numbered below this, so (step, child) gives a distinct sample index.
_CHILD_SLOTS = 1_000

Member = tuple[str, float]  # a population member: canonical text, score


@dataclass(frozen=True, slots=True)
class Child:
    """One optimizer ask of a generation: the prompt, and the members it was made from."""

    prompt: str
    parents: tuple[str, ...]


def roulette(members: Sequence[Member], rng: random.Random, k: int = 2) -> list[int]:
    """`k` distinct member indices (fewer if there are fewer members), drawn one after
    another with probability proportional to the score (negative counts as 0); when every
    remaining member scores 0 the draw is uniform, so a population of zeros still evolves."""
    left = list(range(len(members)))
    chosen: list[int] = []
    for _ in range(min(k, len(left))):
        weights = [max(members[i][1], 0.0) for i in left]
        total = sum(weights)
        if total > 0:
            point = rng.random() * total
            pick = next(i for i, w in zip(left, weights, strict=True) if w > 0)
            for i, w in zip(left, weights, strict=True):
                if w > 0:
                    pick = i
                    point -= w
                    if point < 0:
                        break
        else:
            pick = rng.choice(left)
        chosen.append(pick)
        left.remove(pick)
    return chosen


def ga_children(population: Sequence[Member], rng: random.Random, n: int) -> list[Child]:
    """`n` crossover-and-mutation asks, each from two roulette-drawn parents."""
    children = []
    for _ in range(n):
        picked = roulette(population, rng, 2)
        first, second = population[picked[0]][0], population[picked[-1]][0]
        children.append(Child(ga_prompt(first, second), (first, second)))
    return children


def ga_survivors(
    population: Sequence[Member], children: Sequence[Member | None], n: int
) -> list[str]:
    """The best `n` of parents and children (distinct texts; parents win ties)."""
    pool: dict[str, float] = {}
    for member in [*population, *(c for c in children if c is not None)]:
        pool.setdefault(member[0], member[1])
    ranked = sorted(pool.items(), key=lambda m: -m[1])  # stable: earlier first on ties
    return [text for text, _ in ranked[:n]]


def de_children(population: Sequence[Member], rng: random.Random) -> list[Child]:
    """One ask per member p_i: two other random members, the best member, and p_i."""
    best = max(range(len(population)), key=lambda i: population[i][1])  # first on ties
    children = []
    for i, (member, _) in enumerate(population):
        others = [j for j in range(len(population)) if j != i] or [i]
        r1, r2 = rng.sample(others, 2) if len(others) >= 2 else (others[0], others[0])
        a, b, top = population[r1][0], population[r2][0], population[best][0]
        children.append(Child(de_prompt(member, top, a, b), (member, top, a, b)))
    return children


def de_survivors(population: Sequence[Member], children: Sequence[Member | None]) -> list[str]:
    """Member i replaced by child i only if the child scores strictly higher (and is not
    already a member): DE never trades a member for a worse prompt."""
    members = [text for text, _ in population]
    for i, child in enumerate(children):
        if child is not None and child[1] > population[i][1] and child[0] not in members:
            members[i] = child[0]
    return members


# -- the loop's steps ----------------------------------------------------------------------


def _check(loop: _Loop) -> None:
    if not loop.problem.higher_is_better:
        raise SettingsError(
            f"strategy {loop.cfg.strategy} maximises a score (a prompt's accuracy); "
            "use strategy opro for a problem where lower is better"
        )


def _population(loop: _Loop) -> list[Member]:
    """The current members with their scores, as the log says."""
    out = []
    for text in loop.state.population:
        known = loop.state.scores.get(text)
        if known is not None and known[0] is not None:
            out.append((text, known[0]))
    return out


def _vet_child(
    loop: _Loop, answer: int, text: str, step: int, fresh: set[str], children: int
) -> _Entry:
    """One answer's candidate: the tagged prompt, vetted by the loop's own rules; `children`
    (the answers the step asked for) may all be fresh, whatever --candidates-per-step says."""
    raw = final_prompt(text)
    if raw is None:
        return no_candidate(answer)
    return loop._vet(answer, raw, step, fresh, cap=children)


def _cost(loop: _Loop, generations: Sequence[Generation]) -> RunTotals:
    spend = sum(
        (Spend.of(g.usage, loop.optimizer.cost(g.usage), g.calls) for g in generations), Spend()
    )
    return RunTotals(spend, cache_hits=sum(int(g.cached or g.shared) for g in generations))


async def _ask(
    loop: _Loop, prompts: Sequence[tuple[str, int]], temperature: float, n: int = 1
) -> list[Generation]:
    """Every (prompt, sample) asked at once; all of them finish (so every paid answer is
    cached) before the first failure, if any, is raised."""
    asks = [
        loop.optimizer.generate(
            replace(loop.optimizer.request(prompt), temperature=temperature, n=n),
            sample=sample,
            flow=loop.flow,
        )
        for prompt, sample in prompts
    ]
    results = await asyncio.gather(*asks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if not isinstance(r, BaseException)]


def _scored(c: Candidate) -> Member | None:
    """A candidate as a member: scored now or before, with a score; else None."""
    text, score = c.get("canonical"), c.get("score")
    if c["status"] in ("start", "new", "duplicate") and text is not None and score is not None:
        return text, score
    return None


def _counts(candidates: Sequence[Candidate]) -> tuple[int, int]:
    """(answers with no candidate, rejected proposals) of a step."""
    rejected = [c for c in candidates if c["status"] == "rejected"]
    return sum(c.get("reason") == "no candidate" for c in rejected), len(rejected)


async def initial_population(loop: _Loop) -> None:
    """Step 0: the given instructions, then as many induced ones as the population lacks."""
    _check(loop)
    started = time.perf_counter()
    size = loop.cfg.population_size
    seed = step_seed(loop.cfg.seed, 0)
    entries: list[_Entry] = []
    fresh: set[str] = set()
    for text in loop.problem.initial_solutions():  # scored exactly as given
        if text in fresh:
            entries.append(
                {"text": text, "canonical": text, "status": "duplicate", "duplicate_of_step": 0}
            )
        else:
            fresh.add(text)
            entries.append(_Fresh("start", text, text))
    record: StepRecord = {"step": 0, "kind": "start", "candidates": [], "totals": {}}
    asked = RunTotals()
    if len(fresh) < size:
        examples = getattr(loop.problem, "examples", None)
        if examples is None:
            raise SettingsError(
                f"give at least {size} starting solutions: this problem has no examples "
                "to write them from"
            )
        train = list(examples("train"))
        rng = random.Random(seed)
        answers: list[str] = []
        prompts: list[str] = []
        generations: list[Generation] = []
        loop._phase(0, "optimizer")
        for round_ in range(1 + RESAMPLE_ROUNDS):
            # One ask per missing member, each with its own draw of examples, so that even a
            # deterministic optimizer writes different members.
            asks = [
                induction_prompt(rng.sample(train, min(INDUCTION_EXAMPLES, len(train))))
                for _ in range(size - len(fresh))
            ]
            samples = [round_ * _CHILD_SLOTS + j for j in range(len(asks))]
            batch = await _ask(loop, list(zip(asks, samples, strict=True)), loop.cfg.temperature)
            for generation in batch:
                text = generation.completion.texts[0] if generation.completion.texts else ""
                entries.append(_vet_child(loop, len(answers), text, 0, fresh, size))
                answers.append(text)
            prompts += asks
            generations += batch
            if len(fresh) >= size:
                break
        asked = _cost(loop, generations)
        record["seed"], record["meta_prompts"], record["answers"] = seed, prompts, answers
        record["optimizer"] = optimizer_call(asked, time.perf_counter() - started)
        record["asks"] = len(generations)
    loop._phase(0, "scoring")
    candidates, scoring = await loop._score_new(entries, 0)
    scored = [m for c in candidates if (m := _scored(c)) is not None]
    record["candidates"] = candidates
    if "answers" in record:
        record["extraction_failures"], record["invalid"] = _counts(candidates)
    record["population"] = ga_survivors(scored, [], size)
    await loop._finish(record, started, asked + scoring)


async def next_generation(loop: _Loop, step: int) -> None:
    """One GA or DE generation: ask, vet, score, select; logged as one step."""
    _check(loop)
    started = time.perf_counter()
    seed = step_seed(loop.cfg.seed, step)
    rng = random.Random(seed)
    population = _population(loop)
    if not population:
        raise SettingsError(
            "the population is empty: no starting prompt could be scored (see the run log); "
            "check the scorer, then start a new run"
        )
    de = loop.cfg.strategy == "evoprompt-de"
    size = loop.cfg.population_size
    children = de_children(population, rng) if de else ga_children(population, rng, size)
    temperature = loop.cfg.temperature_at(step)
    loop._phase(step, "optimizer")
    samples = [step * _CHILD_SLOTS + i for i in range(len(children))]
    generations = await _ask(
        loop, [(c.prompt, s) for c, s in zip(children, samples, strict=True)], temperature
    )
    optimizer_s = time.perf_counter() - started
    answers = [g.completion.texts[0] if g.completion.texts else "" for g in generations]
    fresh: set[str] = set()
    entries = [
        _vet_child(loop, i, text, step, fresh, len(answers)) for i, text in enumerate(answers)
    ]
    loop._phase(step, "scoring")
    candidates, scoring = await loop._score_new(entries, step)
    offspring: list[Member | None] = [None] * len(children)
    for c in candidates:
        if (answer := c.get("answer")) is not None:
            offspring[answer] = _scored(c)
    survivors = (
        de_survivors(population, offspring) if de else ga_survivors(population, offspring, size)
    )
    asked = _cost(loop, generations)
    failures, invalid = _counts(candidates)
    record: StepRecord = {
        "step": step, "kind": "optimize", "seed": seed, "temperature": temperature,
        "meta_prompts": [c.prompt for c in children],
        "parents": [list(c.parents) for c in children],
        "answers": answers, "optimizer": optimizer_call(asked, optimizer_s),
        "candidates": candidates, "extraction_failures": failures, "asks": len(generations),
        "invalid": invalid, "population": survivors, "totals": {},
    }  # fmt: skip
    await loop._finish(record, started, asked + scoring)
