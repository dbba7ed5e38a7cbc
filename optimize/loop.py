"""The OPRO loop: one optimizer coroutine per run, generic over the `Problem` it optimizes.

Step 0 scores the starting solutions exactly as the problem gives them (a user's typed
instructions are never polished; only the optimizer's proposals are). Every later step:

1. builds the meta-prompt from the scored history with the step's own `random.Random`,
   seeded from (run seed, step) so a resumed step draws the same exemplars;
2. asks the optimizer model once for N answers (`n=N`; the engine splits the request into
   single calls when a server ignores `n`), with `sample=step` in the cache key, so a
   resumed step gets the very answers the interrupted one got, from the cache;
3. extracts and vets candidates (`Problem.parse` / `Problem.check`), and marks duplicates of
   anything already scored in this run: their score is reused, never paid for again; with
   `resample_invalid` it asks again for as many answers as were invalid (as the paper's TSP
   code does), at most `RESAMPLE_ROUNDS` more times, each ask with its own sample index;
   the record counts the invalid proposals (`invalid`) and the asks (`asks`) either way;
4. scores the new ones on the training split through the engine's fan-out (with `racing`,
   in rounds that stop the candidates that cannot matter: `optimize/racing.py`);
5. every `eval_every` steps scores the best solution so far on the validation split, and
   stops after `patience` validation checks without improvement;
6. appends the step record to the run log.

Everything the loop knows is a function of the step records (`_State.apply`), so a resumed
run rebuilds exactly the state an uninterrupted one had. At the end the top solutions and the
baselines are scored on every split and reported side by side.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from opro.checks import CANDIDATES, COUNT, POSITIVE_COUNT, SEED, STEPS, TEMPERATURE
from opro.engine.ledger import run_spend
from opro.engine.model import Model
from opro.engine.spend import Spend
from opro.errors import SettingsError
from opro.optimize.candidates import interleave
from opro.optimize.gradings import chosen_score, final_gradings, grading_fields, gradings_of
from opro.optimize.metaprompt import MetaPromptConfig, Scored
from opro.optimize.problem import Problem, SplitName, model_identity
from opro.optimize.protocol import PROTOCOLS, ProtocolName, resolve_meta
from opro.optimize.racing import (
    RACING_DELTA,
    check_racing,
    check_racing_meta,
    racing_seed,
    score_step,
)
from opro.optimize.records import (
    Candidate,
    OtherCandidate,
    RunTotals,
    ScoredStatus,
    StepRecord,
    ValidationCheck,
    is_scored,
    no_candidate,
    optimizer_call,
    raced_candidate,
    scored_candidate,
    spend_record,
    validation_check,
    wrong_examples,
)
from opro.optimize.runlog import RunLog, flatten, render_summary
from opro.optimize.strategies import POPULATION, check_strategy, is_evolutionary
from opro.tasks.grading import GRADINGS, Grading

# How many more times a step may ask the optimizer for the answers that were invalid.
RESAMPLE_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class OptimizeConfig:
    """The loop's options; defaults follow the paper (8 candidates, temperature 1, 200 steps).

    `temperature_end` set means the temperature rises linearly from `temperature` at step 1
    to it at step `steps`. `test_top` solutions, ranked by `select_by`, go to the final table.
    `grading` picks the accuracy a prompt is optimized by (the meta-prompt's scores, the best):
    our strict rules or the paper's reference rules; records and results carry both.
    `protocol` names the preset the settings came from (`protocol.protocol_preset`), so the
    run's records say whether its numbers follow the paper's protocol.
    `racing` scores a step's candidates in rounds and stops those that cannot enter the
    meta-prompt or the final table (`optimize/racing.py`); `racing_delta` bounds, per step,
    the probability that one that could is stopped.
    `strategy` picks how steps propose solutions (`strategies.STRATEGIES`: this loop's OPRO
    steps, or EvoPrompt's GA / DE in `evoprompt.py` on a population of `population_size`).
    """

    steps: int = 200
    candidates_per_step: int = 8
    temperature: float = 1.0
    temperature_end: float | None = None
    seed: int = 0
    meta: MetaPromptConfig = field(default_factory=MetaPromptConfig)
    eval_every: int = 3
    patience: int | None = None
    test_top: int = 3
    select_by: Literal["train", "validation"] = "train"
    grading: Grading = "strict"
    protocol: ProtocolName = "ours"
    resample_invalid: bool = False
    racing: bool = False
    racing_delta: float = 0.05
    strategy: str = "opro"
    population: int | None = None

    def __post_init__(self) -> None:
        RACING_DELTA.check("racing_delta", self.racing_delta)
        check_strategy(self.strategy)
        if self.population is not None:
            POPULATION.check("population", self.population)
        if self.racing:
            check_racing_meta(self.meta)
            if self.strategy != "opro":
                raise SettingsError(
                    f"racing works with the opro strategy only, not {self.strategy}: an "
                    "EvoPrompt population compares full scores; drop --racing"
                )
        if self.protocol not in PROTOCOLS:
            raise SettingsError(f"unknown protocol {self.protocol!r}; use {', '.join(PROTOCOLS)}")
        STEPS.check("steps", self.steps)
        CANDIDATES.check("candidates per step", self.candidates_per_step)
        TEMPERATURE.check("temperature", self.temperature)
        if self.temperature_end is not None:
            TEMPERATURE.check("temperature_end", self.temperature_end)
        SEED.check("seed", self.seed)
        POSITIVE_COUNT.check("eval_every", self.eval_every)
        if self.patience is not None:
            POSITIVE_COUNT.check("patience", self.patience)
        COUNT.check("test_top", self.test_top)
        if self.select_by not in ("train", "validation"):
            raise SettingsError(f"select_by must be train or validation, got {self.select_by!r}")
        if self.grading not in GRADINGS:
            raise SettingsError(
                f"grading must be one of {', '.join(GRADINGS)}, got {self.grading!r}"
            )

    @property
    def population_size(self) -> int:
        """N of the EvoPrompt strategies: `population`, else `candidates_per_step`, so a
        generation scores as many new prompts as an OPRO step."""
        return self.population if self.population is not None else self.candidates_per_step

    def temperature_at(self, step: int) -> float:
        if self.temperature_end is None or self.steps <= 1:
            return self.temperature
        return self.temperature + (step - 1) / self.steps * (
            self.temperature_end - self.temperature
        )


@dataclass(frozen=True, slots=True)
class FinalRow:
    solution: str
    role: str
    train: float | None
    validation: float | None
    test: float | None
    # Per split, for prompts only: accuracy by each grading rules and answers cut short.
    accuracy: dict[str, float | None] | None = None
    accuracy_reference: dict[str, float | None] | None = None
    truncated: dict[str, int] | None = None


@dataclass(slots=True)
class OptimizationResult:
    best: Scored | None
    history: list[Scored]
    validation: dict[str, float]
    final: list[FinalRow]
    steps_completed: int
    stopped_early: bool
    totals: RunTotals
    wall_s: float = 0.0
    run_dir: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    gradings: dict[str, dict[str, Any]] = field(default_factory=dict)  # train, per solution
    answers: int = 0  # optimizer answers read, and how many of them held no candidate
    extraction_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        """What results.json holds: `run` is the result-changing configuration."""
        return {
            "best": _scored(self.best) if self.best else None,
            "solutions": [
                {
                    **_scored(s),
                    **self.gradings.get(s.solution, {}),
                    "validation": self.validation.get(s.solution),
                }
                for s in self.history
            ],
            "final": [asdict(r) for r in self.final],
            "steps_completed": self.steps_completed,
            "stopped_early": self.stopped_early,
            "totals": self.totals.to_dict(),
            "wall_s": self.wall_s,
            "run": self.run,
            "answers": self.answers,
            "extraction_failures": self.extraction_failures,
        }


def _scored(s: Scored) -> dict[str, Any]:
    """A solution for results.json; which examples it missed stays in steps.jsonl."""
    return {"solution": s.solution, "score": s.score, "step": s.step}


Phase = Literal["optimizer", "scoring", "validation", "final"]


@dataclass(frozen=True, slots=True)
class StepPhase:
    """What a progress display gets when a step starts a phase that calls models: the
    optimizer call, scoring the new candidates, the validation check, the final table."""

    step: int
    steps: int
    phase: Phase


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a progress display gets after every step."""

    step: int
    steps: int
    best: Scored | None
    totals: RunTotals
    record: StepRecord


def step_seed(seed: int, step: int) -> int:
    """The seed of one step's random stream: a pure function, so resume needs no RNG state."""
    digest = hashlib.sha256(f"opro-step/{seed}/{step}".encode()).digest()
    return int.from_bytes(digest[:6], "big")  # 48 bits: exact in any JSON reader


def resample_seed(step: int, round_: int) -> int:
    """The sample index of the `round_`-th re-ask of `step` (>= 1): negative, so it never
    meets a step's own index (`sample=step`), and distinct for every (step, round)."""
    return -(step * (RESAMPLE_ROUNDS + 1) + round_)


@dataclass(frozen=True, slots=True)
class _Fresh:
    """A candidate to score in this step; its record entry is written once it is scored."""

    status: ScoredStatus
    text: str
    canonical: str
    answer: int | None = None


_Entry = Candidate | _Fresh


def _rejected(e: _Entry) -> bool:
    return not isinstance(e, _Fresh) and e["status"] == "rejected"


class _State:
    """Everything the loop knows, rebuilt from step records alone."""

    def __init__(self, higher_is_better: bool, patience: int | None) -> None:
        self.sign = 1.0 if higher_is_better else -1.0
        self.patience = patience
        self.scores: dict[str, tuple[float | None, int, bool]] = {}  # score, step, complete
        self.validation: dict[str, float] = {}
        # Both accuracies of prompts, by solution: on train and on validation.
        self.gradings: dict[str, dict[str, Any]] = {}
        self.validation_gradings: dict[str, dict[str, Any]] = {}
        self.best_validation: float | None = None
        self.stale = 0
        self.stopped_early = False
        self.last_step = -1
        self.totals = RunTotals()
        self.wrong: dict[str, tuple[int, ...]] = {}  # training examples each solution missed
        self.raced: dict[str, int] = {}  # proposals racing stopped, by the step that did
        self.answers = self.extraction_failures = 0
        self.population: list[str] = []  # the EvoPrompt strategies' members, as last logged

    def final_score(self, solution: str) -> tuple[float, int] | None:
        """The score of a solution scored without errors, with the step that scored it."""
        known = self.scores.get(solution)
        if known is None or known[0] is None or not known[2]:
            return None
        return known[0], known[1]

    def history(self) -> list[Scored]:
        return [
            Scored(s, v[0], v[1], self.wrong.get(s))
            for s, v in self.scores.items()
            if v[0] is not None
        ]

    def ranked(self) -> list[Scored]:
        """Best first; among equal scores the earlier-found first."""
        return sorted(self.history(), key=lambda h: -self.sign * h.score)

    def best(self) -> Scored | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def apply_candidates(self, record: StepRecord) -> None:
        for c in record["candidates"]:
            if is_scored(c):
                self.scores[c["canonical"]] = (c["score"], record["step"], c["errors"] == 0)
                if (found := gradings_of(c)) is not None:
                    self.gradings[c["canonical"]] = found
                if (wrong := wrong_examples(c)) is not None:
                    self.wrong[c["canonical"]] = wrong
            elif c["status"] == "raced":
                self.raced.setdefault(c["canonical"], record["step"])

    def complete_scores(self) -> list[float]:
        """The scores of the solutions scored on every training example without errors."""
        return [v[0] for v in self.scores.values() if v[0] is not None and v[2]]

    def apply_rest(self, record: StepRecord) -> None:
        check = record.get("validation")
        if check is not None and (value := check.get("score")) is not None:
            self.validation[check["solution"]] = value
            if (found := gradings_of(check)) is not None:
                self.validation_gradings[check["solution"]] = found
            score = self.sign * value
            if self.best_validation is None or score > self.sign * self.best_validation:
                self.best_validation, self.stale = value, 0
            else:
                self.stale += 1
                if self.patience is not None and self.stale >= self.patience:
                    self.stopped_early = True
        self.totals += RunTotals.from_dict(record["totals"])
        if "population" in record:
            self.population = list(record["population"])
        self.last_step = record["step"]
        self.answers += len(record.get("answers", ()))
        self.extraction_failures += record.get("extraction_failures", 0)

    def apply(self, record: StepRecord) -> None:
        self.apply_candidates(record)
        self.apply_rest(record)


class _Loop:
    def __init__(
        self,
        problem: Problem,
        optimizer: Model,
        cfg: OptimizeConfig,
        state: _State,
        log: RunLog | None,
        on_step: Callable[[StepInfo], None] | None,
        on_phase: Callable[[StepPhase], None] | None = None,
        flow: Hashable = None,
    ) -> None:
        self.flow = flow
        self.problem = problem
        self.optimizer = optimizer
        self.cfg = cfg
        self.state = state
        self.log = log
        self.on_step = on_step
        self.on_phase = on_phase
        self.splits = problem.splits

    def _phase(self, step: int, phase: Phase) -> None:
        if self.on_phase is not None:
            self.on_phase(StepPhase(step, self.cfg.steps, phase))

    async def initial(self) -> None:
        if is_evolutionary(self.cfg.strategy):
            from opro.optimize.evoprompt import initial_population  # it builds on this module

            return await initial_population(self)
        started = time.perf_counter()
        entries: list[_Entry] = []
        fresh: set[str] = set()
        for text in self.problem.initial_solutions():
            # Scored exactly as given: polishing and vetting are for the optimizer's proposals.
            if text in fresh:
                entries.append(
                    {"text": text, "canonical": text, "status": "duplicate", "duplicate_of_step": 0}
                )
            else:
                fresh.add(text)
                entries.append(_Fresh("start", text, text))
        self._phase(0, "scoring")
        candidates, cost = await self._score_new(entries, 0)
        record: StepRecord = {"step": 0, "kind": "start", "candidates": candidates, "totals": {}}
        await self._finish(record, started, cost)

    async def step(self, step: int) -> None:
        if is_evolutionary(self.cfg.strategy):
            from opro.optimize.evoprompt import next_generation  # it builds on this module

            return await next_generation(self, step)
        started = time.perf_counter()
        seed = step_seed(self.cfg.seed, step)
        rng = random.Random(seed)
        meta = self.problem.meta_prompt(self.state.history(), self.cfg.meta, rng)
        temperature = self.cfg.temperature_at(step)
        request = replace(
            self.optimizer.request(meta.text),
            temperature=temperature,
            n=self.cfg.candidates_per_step,
        )
        answers: list[str] = []
        entries: list[_Entry] = []
        fresh: set[str] = set()
        generations = []
        sample = step
        self._phase(step, "optimizer")
        while True:
            generation = await self.optimizer.generate(request, sample=sample, flow=self.flow)
            generations.append(generation)
            batch = list(generation.completion.texts)
            entries += self._vet_answers(batch, len(answers), step, fresh)
            answers += batch
            invalid = sum(_rejected(e) for e in entries)
            missing = self.cfg.candidates_per_step - (len(entries) - invalid)
            if not self.cfg.resample_invalid or missing <= 0 or len(generations) > RESAMPLE_ROUNDS:
                break
            request = replace(request, n=missing)
            sample = resample_seed(step, len(generations))
        optimizer_s = time.perf_counter() - started
        self._phase(step, "scoring")
        candidates, scoring = await self._score_new(entries, step)
        asked = RunTotals(
            sum(
                (Spend.of(g.usage, self.optimizer.cost(g.usage), g.calls) for g in generations),
                Spend(),
            ),
            cache_hits=sum(int(g.cached or g.shared) for g in generations),
        )
        record: StepRecord = {
            "step": step, "kind": "optimize", "seed": seed, "temperature": temperature,
            "exemplars": list(meta.exemplar_ids), "meta_prompt": meta.text, "answers": answers,
            "optimizer": optimizer_call(asked, optimizer_s), "candidates": candidates,
            "extraction_failures": sum(
                c["status"] == "rejected" and c.get("reason") == "no candidate"
                for c in candidates
            ),
            "asks": len(generations),
            "invalid": sum(c["status"] == "rejected" for c in candidates),
            "totals": {},
        }  # fmt: skip
        await self._finish(record, started, asked + scoring)

    def _vet_answers(
        self, answers: list[str], first: int, step: int, fresh: set[str]
    ) -> list[_Entry]:
        """Extract and vet the candidates of one batch of answers (numbered from `first`)."""
        per_answer = [self.problem.parse(a, self.cfg.meta) for a in answers]
        entries = [
            self._vet(first + index, raw, step, fresh) for index, raw in interleave(per_answer)
        ]
        entries += [no_candidate(first + i) for i, got in enumerate(per_answer) if not got]
        return entries

    def _vet(
        self, answer: int, raw: str, step: int, fresh: set[str], cap: int | None = None
    ) -> _Entry:
        """One proposal's entry: rejected, a duplicate, surplus beyond `cap` fresh ones in the
        step (default: --candidates-per-step), or fresh."""
        canonical, reason = self.problem.check(raw)
        known = self.state.final_score(canonical)
        entry: OtherCandidate = {
            "answer": answer, "text": raw, "canonical": canonical, "status": "rejected"
        }  # fmt: skip
        if reason is not None:
            entry["reason"] = reason
        elif canonical in fresh:
            entry["status"] = "duplicate"
            entry["duplicate_of_step"] = step
        elif known is not None:
            entry["status"] = "duplicate"
            entry["duplicate_of_step"], entry["score"] = known[1], known[0]
        elif canonical in self.state.raced:  # it cannot matter: not scored again
            entry["status"] = "duplicate"
            entry["duplicate_of_step"], entry["score"] = self.state.raced[canonical], None
            entry["reason"] = "raced"
        elif len(fresh) >= (self.cfg.candidates_per_step if cap is None else cap):
            entry["status"] = "surplus"
            entry["reason"] = "the step already has enough candidates"
        else:
            fresh.add(canonical)
            return _Fresh("new", raw, canonical, answer)
        return entry

    async def _score_new(
        self, entries: list[_Entry], step: int
    ) -> tuple[list[Candidate], RunTotals]:
        """Score the step's fresh solutions (one fan-out, or racing rounds); fill in the
        in-step duplicates.

        Returns the step's candidate entries in order, and what scoring them cost.
        """
        fresh = [e for e in entries if isinstance(e, _Fresh)]
        scores = iter(
            await score_step(
                self.problem,
                [e.canonical for e in fresh],
                complete=self.state.complete_scores(),
                meta=self.cfg.meta,
                test_top=self.cfg.test_top,
                delta=self.cfg.racing_delta if self.cfg.racing and step > 0 else None,
                seed=racing_seed(self.cfg.seed, step),
                grading=self.cfg.grading,
            )
        )
        out: list[Candidate] = []
        by_solution: dict[str, float | None] = {}
        cost = RunTotals()
        for entry in entries:
            if isinstance(entry, _Fresh):
                s, raced = next(scores)
                value = chosen_score(s, self.cfg.grading)
                cost += RunTotals.of(s)
                if raced is not None:  # a partial score: never passed on as a full one
                    out.append(
                        raced_candidate(entry.text, entry.canonical, value, s, raced, entry.answer)
                    )
                    by_solution[entry.canonical] = None
                    continue
                out.append(
                    scored_candidate(
                        entry.status, entry.text, entry.canonical, value, s, entry.answer
                    )
                )
                by_solution[entry.canonical] = value
            else:
                out.append(entry)
        for c in out:
            if c["status"] == "duplicate" and "score" not in c:
                c["score"] = by_solution.get(c.get("canonical", ""))
        return out, cost

    async def _finish(self, record: StepRecord, started: float, cost: RunTotals) -> None:
        """Validate if due, add the step's totals and the run's spend, and log the record."""
        self.state.apply_candidates(record)
        step = record["step"]
        record["validation"] = None
        if "validation" in self.splits and step % self.cfg.eval_every == 0:
            self._phase(step, "validation")
            check, validated = await self._validate()
            record["validation"] = check
            cost += validated
        record["totals"] = cost.to_dict()
        spent = run_spend(self.optimizer.budget, self.log.directory if self.log else None)
        if spent is not None:
            record["spend"] = spend_record(spent)  # the run's total so far, over all sessions
        record["wall_s"] = round(time.perf_counter() - started, 6)
        self.state.apply_rest(record)
        if self.log is not None:
            await self.log.append_async(record)
        if self.on_step is not None:
            self.on_step(
                StepInfo(step, self.cfg.steps, self.state.best(), self.state.totals, record)
            )

    async def _validate(self) -> tuple[ValidationCheck | None, RunTotals]:
        """The best solution's validation check, and what scoring it cost."""
        best = self.state.best()
        if best is None:
            return None, RunTotals()
        known = self.state.validation.get(best.solution)
        if known is not None:
            return {"solution": best.solution, "score": known, "reused": True}, RunTotals()
        [score] = await self.problem.score([best.solution], "validation")
        value = chosen_score(score, self.cfg.grading)
        return validation_check(best.solution, value, score), RunTotals.of(score)

    async def final(self) -> tuple[list[FinalRow], RunTotals]:
        """Score the top solutions and the baselines on every split, side by side."""
        spent = RunTotals()
        if self.cfg.test_top == 0:
            return [], spent
        self._phase(self.state.last_step, "final")
        roles: dict[str, str] = {}
        for rank, solution in enumerate(self._top(), start=1):
            roles.setdefault(solution, f"top {rank}")
        # Like the starting solutions, baselines are scored exactly as given.
        starts = set(self.problem.initial_solutions())
        for text in self.problem.baselines():
            roles.setdefault(text, "start" if text in starts else "baseline")
        solutions = list(roles)
        columns: dict[SplitName, list[float | None]] = {}
        graded: dict[str, dict[str, dict[str, Any]]] = {}
        for split in ("train", "validation", "test"):
            if split not in self.splits:
                continue
            known = self._known(split)
            graded[split] = self._known_gradings(split)
            missing = [s for s in solutions if s not in known]
            for solution, score in zip(
                missing, await self.problem.score(missing, split), strict=True
            ):
                known[solution] = chosen_score(score, self.cfg.grading)
                if found := grading_fields(score):
                    graded[split][solution] = found
                spent += RunTotals.of(score)
            columns[split] = [known[s] for s in solutions]
        rows = [
            FinalRow(
                solution=s,
                role=roles[s],
                train=columns["train"][i],
                validation=columns["validation"][i] if "validation" in columns else None,
                test=columns["test"][i] if "test" in columns else None,
                **final_gradings(s, graded),
            )
            for i, s in enumerate(solutions)
        ]
        return rows, spent

    def _known_gradings(self, split: SplitName) -> dict[str, dict[str, Any]]:
        if split == "train":
            return dict(self.state.gradings)
        if split == "validation":
            return dict(self.state.validation_gradings)
        return {}

    def _known(self, split: SplitName) -> dict[str, float | None]:
        if split == "train":
            return {h.solution: h.score for h in self.state.history()}
        if split == "validation":
            return dict(self.state.validation)
        return {}

    def _top(self) -> list[str]:
        ranked = [h.solution for h in self.state.ranked()]
        if self.cfg.select_by == "validation":
            sign = self.state.sign
            validated = sorted(
                self.state.validation, key=lambda s: -sign * self.state.validation[s]
            )
            ranked = validated + [s for s in ranked if s not in self.state.validation]
        return ranked[: self.cfg.test_top]


def run_identity(problem: Problem, optimizer: Model, cfg: OptimizeConfig) -> dict[str, Any]:
    """The result-changing settings of a run, as stored in config.json and checked on resume."""
    options = asdict(cfg)
    return {
        "problem": problem.describe(),
        "optimizer": {
            **model_identity(optimizer),
            "max_tokens": optimizer.decoding.max_tokens,
            "stop": list(optimizer.decoding.stop),
            "seed": optimizer.decoding.seed,
        },
        "options": options,
    }


def _resumable_changes(cfg: OptimizeConfig) -> frozenset[str]:
    """Settings that may differ on resume: they act after the logged steps, not on them.

    More steps extend a run, unless the temperature schedule depends on the step count.
    """
    free = {"options.test_top", "options.select_by"}
    if cfg.temperature_end is None:
        free.add("options.steps")
    return frozenset(free)


def option_defaults() -> dict[str, Any]:
    """Every option's default, keyed as config.json's flattened keys ("options.grading").

    A run directory written before an option existed has no key for it, and that run
    behaved as the option's default: a new option's default must keep the behaviour runs had
    before it (e.g. `grading` strict, `protocol` ours, `resample_invalid` off). So resume
    compares a key missing from an old config with the default, for every option at once.
    """
    return dict(flatten({"options": asdict(OptimizeConfig())}))


async def optimize(
    problem: Problem,
    optimizer: Model,
    config: OptimizeConfig | None = None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    info: Mapping[str, Any] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_phase: Callable[[StepPhase], None] | None = None,
    flow: Hashable = None,
) -> OptimizationResult:
    """Run OPRO on `problem` with `optimizer` proposing solutions; see the module docstring.

    With `run_dir` every step is logged there; `resume=True` continues the run logged there
    (refusing if a result-changing setting differs) without paying again for anything that
    was scored or proposed before. `info` is stored in config.json for reference only.
    `on_step` gets a `StepInfo` after every step, `on_phase` a `StepPhase` when a step starts
    calling models (for progress displays; neither may raise).
    `flow` names who the optimizer's calls are for on a shared connection (a sweep task).
    """
    started = time.perf_counter()
    cfg = config or OptimizeConfig()
    cfg = replace(cfg, meta=resolve_meta(cfg.meta, optimizer.spec, problem))  # no "auto" left
    splits = problem.splits
    if cfg.patience is not None and "validation" not in splits:
        raise SettingsError("early stopping needs validation examples (a validation fraction > 0)")
    if cfg.select_by == "validation" and "validation" not in splits:
        raise SettingsError("selecting by validation score needs validation examples")
    if cfg.racing:
        check_racing(problem, cfg.meta)
    identity = run_identity(problem, optimizer, cfg)
    state = _State(problem.higher_is_better, cfg.patience)
    log: RunLog | None = None
    if run_dir is None:
        if resume:
            raise SettingsError("resume needs the run directory of the run to continue")
    elif resume:
        log, records = RunLog.resume(
            run_dir, identity, ignore=_resumable_changes(cfg), added=option_defaults()
        )
        for record in records:
            state.apply(record)
    else:
        log = RunLog.create(run_dir, {"run": identity, "info": dict(info or {})})
    loop = _Loop(problem, optimizer, cfg, state, log, on_step, on_phase, flow)
    if state.last_step < 0:
        await loop.initial()
    # Optional hook: a problem with a known optimum (linreg, TSP) ends the run once it is found.
    solved = getattr(problem, "solved", None)

    def done() -> bool:
        best = state.best()
        return solved is not None and best is not None and bool(solved(best.solution))

    while state.last_step < cfg.steps and not state.stopped_early and not done():
        await loop.step(state.last_step + 1)
    final, final_cost = await loop.final()
    totals = state.totals + final_cost
    if (spent := run_spend(optimizer.budget, run_dir)) is not None:
        totals = replace(totals, spend=spent)  # the ledger: stopped steps included
    result = OptimizationResult(
        best=state.best(),
        history=state.history(),
        validation=dict(state.validation),
        final=final,
        steps_completed=state.last_step,
        stopped_early=state.stopped_early,
        totals=totals,
        wall_s=round(time.perf_counter() - started, 6),
        run_dir=log.directory if log is not None else None,
        run=identity,
        gradings=dict(state.gradings),
        answers=state.answers,
        extraction_failures=state.extraction_failures,
    )
    if log is not None:
        results = result.to_dict()
        await log.write_results_async(results, render_summary(results))
    return result
