"""What the OPRO loop optimizes: the `Problem` protocol, and `PromptProblem` for instructions.

The optimizer loop (`optimizer.py`) knows nothing about prompts. It asks a `Problem` for the
starting solutions, for the meta-prompt of a step, to pull candidates out of the optimizer's
answers, to clean and vet each candidate, and to score a batch of solutions on a split, and it
reads `higher_is_better` to know which way is up. Solutions are strings (their canonical
spelling is the dedup key and what the run log stores), so an instruction, a "w=3, b=5" pair or
a TSP tour all fit. Linear regression and TSP plug in with their own `MetaPromptPart`.

`PromptProblem` scores instructions through `Engine.evaluate` (the cached, rate-limited
fan-out); a solution's score is its accuracy in [0, 1] over the examples that could be graded,
and infrastructure failures are reported as errors, never as wrong answers.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from opro.engine.batch import BatchSettings
from opro.engine.batch_evaluate import evaluate_in_batches
from opro.engine.budget import BudgetExceeded
from opro.engine.evaluate import ErrorPolicy, Grader, Progress
from opro.engine.spend import NOTHING, Spend, SpendFields
from opro.errors import SettingsError
from opro.optimize.candidates import check, extract, extract_reference
from opro.optimize.exemplars import choose_exemplars
from opro.optimize.metaprompt import (
    InstructionPart,
    MetaPrompt,
    MetaPromptConfig,
    Scored,
    build_meta_prompt,
)
from opro.optimize.protocol import reference_min_score
from opro.tasks.datasets import Task
from opro.tasks.prompts import Position, needs_qa_framing, placed
from opro.tasks.splits import Split, split
from opro.tasks.types import Example

if TYPE_CHECKING:
    from opro.engine.engine import Engine
    from opro.engine.model import Model

SplitName = Literal["train", "validation", "test"]
THINK_STEP_BY_STEP = "Let's think step by step."
GSM8K_START = "Let's solve the problem."


@dataclass(frozen=True, slots=True)
class SolutionScore(SpendFields):
    """One solution's score on one split, and what obtaining it cost (`spend`).

    `score` is None when nothing could be graded (every call failed); a score with
    `errors` > 0 rests on fewer examples and is re-scored if the solution comes up again.
    `by_grading` holds a prompt's accuracy by each set of grading rules ("strict",
    "reference"); the loop optimizes the one its `grading` option names. `truncated` counts
    answers cut at the scorer's token limit.
    """

    score: float | None
    spend: Spend = NOTHING
    cache_hits: int = 0
    errors: int = 0
    detail: Mapping[str, Any] = field(default_factory=dict)
    by_grading: Mapping[str, float | None] = field(default_factory=dict)
    truncated: int = 0


class Problem(Protocol):
    """Everything the optimizer loop needs to know about what it optimizes."""

    @property
    def higher_is_better(self) -> bool: ...

    @property
    def splits(self) -> frozenset[SplitName]:
        """The splits `score` accepts; "train" is always one of them."""
        ...

    def describe(self) -> dict[str, Any]:
        """Everything about the problem that changes results (JSON), for resume checks."""
        ...

    def initial_solutions(self) -> list[str]:
        """The starting solutions, scored and recorded exactly as given (not `check`ed)."""
        ...

    def baselines(self) -> list[str]:
        """Solutions reported beside the best ones in the final table."""
        ...

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt: ...

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        """Raw candidates in one optimizer answer."""
        ...

    def check(self, candidate: str) -> tuple[str, str | None]:
        """(canonical form, rejection reason or None)."""
        ...

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        """Scores in the order given; solutions are canonical and distinct."""
        ...


def _digest(examples: Sequence[Example]) -> str:
    """A fingerprint of a split's content, so a changed data file cannot resume a run."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.input}\x00{ex.target}\x00{'|'.join(ex.choices)}\x01".encode())
    return h.hexdigest()[:16]


def model_identity(model: Model) -> dict[str, Any]:
    """What about a model changes its answers, minus its server address.

    A local server restarted on another port still runs the same model, so the address may
    change between a run and its resume; the cache keys still tell the two apart.
    """
    identity = {k: v for k, v in model.provider.cache_identity().items() if k != "base_url"}
    return {**identity, "spec": model.spec}


def task_description(task: Task) -> str:
    """How the pretrained-style meta-prompt names a task's problems."""
    if task.name == "gsm8k":
        return "grade school math"
    name = task.name.rsplit("/", 1)[-1]
    for suffix in (".jsonl", ".json", ".csv"):
        name = name.removesuffix(suffix)
    return name.replace("_", " ").replace("-", " ")


class PromptProblem:
    """Find an instruction that maximises a scorer's accuracy on a task's training split."""

    higher_is_better = True

    def __init__(
        self,
        engine: Engine,
        scorer: Model,
        task: Task,
        *,
        data: Split | None = None,
        train_fraction: float | None = None,
        validation_fraction: float = 0.0,
        split_seed: int = 0,
        position: Position = "Q_begin",
        qa_framing: bool | None = None,
        starting: Sequence[str] | None = None,
        forbid_digits: bool | None = None,
        test_limit: int | None = None,
        grader: Grader | None = None,
        errors: ErrorPolicy | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        flow: Hashable = None,
    ) -> None:
        self.engine = engine
        self.flow = flow  # who the scorer calls are for on a shared connection (a sweep task)
        self.scorer = scorer
        self.task = task
        self.data = data or split(
            task,
            train_fraction=train_fraction,
            validation_fraction=validation_fraction,
            seed=split_seed,
        )
        if not self.data.train:
            raise SettingsError(f"task {task.name} has no training examples to optimize on")
        if test_limit is not None and test_limit < 1:
            raise SettingsError(f"test_limit must be >= 1, got {test_limit}")
        self.test_examples = self.data.test[:test_limit] if test_limit else self.data.test
        self.position: Position = position
        # None: no Q:/A: framing (the reference's default) unless the position needs it
        self.qa_framing = needs_qa_framing(position) if qa_framing is None else qa_framing
        default_start = GSM8K_START if task.name == "gsm8k" else ""
        self.starting = list(starting) if starting is not None else [default_start]
        if not self.starting:
            raise SettingsError("give at least one starting instruction (it may be empty)")
        self.forbid_digits = task.name == "gsm8k" if forbid_digits is None else forbid_digits
        self.grader = grader
        self.errors = errors
        self.on_progress = on_progress
        self.part = InstructionPart(
            self.data.train, position, self.qa_framing, task_description=task_description(task)
        )
        # Batch mode (`--batch`): each scoring goes through the vendor's batch API, with its
        # state in this run directory (see `engine.batch`); None scores live.
        self.batch: tuple[BatchSettings, Path] | None = None

    @property
    def splits(self) -> frozenset[SplitName]:
        names: set[SplitName] = {"train"}
        if self.data.validation:
            names.add("validation")
        if self.test_examples:
            names.add("test")
        return frozenset(names)

    def examples(self, name: SplitName) -> Sequence[Example]:
        if name == "train":
            return self.data.train
        return self.data.validation if name == "validation" else self.test_examples

    def describe(self) -> dict[str, Any]:
        grader_version = getattr(self.grader, "version", None) if self.grader else "task"
        return {
            "kind": "prompt",
            "task": self.task.name,
            "train": {"n": len(self.data.train), "sha": _digest(self.data.train)},
            "validation": {"n": len(self.data.validation), "sha": _digest(self.data.validation)},
            "test": {"n": len(self.test_examples), "sha": _digest(self.test_examples)},
            "scorer": model_identity(self.scorer),
            "scorer_decoding": {
                "temperature": self.scorer.decoding.temperature,
                "max_tokens": self.scorer.decoding.max_tokens,
                "stop": list(self.scorer.decoding.stop),
                "seed": self.scorer.decoding.seed,
            },
            "position": self.position,
            "qa_framing": self.qa_framing,
            "starting": list(self.starting),
            "forbid_digits": self.forbid_digits,
            "grader": grader_version,
        }

    def initial_solutions(self) -> list[str]:
        """The starting instructions exactly as given (a blank one is the empty one): the
        loop scores them verbatim; only the optimizer's proposals are polished."""
        return [placed(s) for s in self.starting]

    def baselines(self) -> list[str]:
        return [*self.initial_solutions(), THINK_STEP_BY_STEP]

    def reference_min_score(self) -> float:
        """The reference's threshold for listing earlier instructions, set by the scorer."""
        return reference_min_score(self.scorer.spec)

    def meta_prompt(
        self, history: Sequence[Scored], cfg: MetaPromptConfig, rng: random.Random
    ) -> MetaPrompt:
        part = self.part
        if cfg.style != "pretrained":  # the pretrained style shows no exemplars
            chosen = choose_exemplars(history, cfg, len(self.data.train), rng)
            if chosen is not None:
                part = replace(part, chosen=chosen)
        return build_meta_prompt(history, part, cfg, rng)

    def parse(self, answer: str, cfg: MetaPromptConfig) -> list[str]:
        read = extract_reference if cfg.extraction == "reference" else extract
        return read(answer, cfg.style, tag=self.part.tag(cfg))

    def check(self, candidate: str) -> tuple[str, str | None]:
        return check(candidate, forbid_digits=self.forbid_digits)

    async def score(self, solutions: Sequence[str], split: SplitName) -> list[SolutionScore]:
        if not solutions:
            return []
        examples = self.examples(split)
        if not examples:
            raise SettingsError(f"task {self.task.name} has no {split} examples")
        return await self._score_on(solutions, examples, split)

    def training_size(self) -> int:
        """How many training examples a full score rests on (racing's population)."""
        return len(self.data.train)

    async def score_examples(
        self, solutions: Sequence[str], indices: Sequence[int]
    ) -> list[SolutionScore]:
        """Scores on the training examples at `indices` (a racing round); `wrong` holds
        training indices, so rounds merge into what one full fan-out would report."""
        if not solutions:
            return []
        train = self.data.train
        return await self._score_on(solutions, [train[i] for i in indices], "train", indices)

    async def _score_on(
        self,
        solutions: Sequence[str],
        examples: Sequence[Example],
        split: SplitName,
        indices: Sequence[int] | None = None,
    ) -> list[SolutionScore]:
        """One fan-out of `solutions` over `examples`; `indices` maps positions in `examples`
        back to training indices for `wrong`."""
        if self.batch is not None:
            report = await evaluate_in_batches(
                self.engine,
                list(solutions),
                examples,
                self.scorer,
                run_dir=self.batch[1],
                settings=self.batch[0],
                resume=True,  # a step's batch left by a killed session is collected
                grader=self.grader,
                position=self.position,
                qa_framing=self.qa_framing,
                on_progress=self.on_progress,
                errors=self.errors,
                flow=self.flow,
            )
        else:
            report = await self.engine.evaluate(
                list(solutions),
                examples,
                self.scorer,
                grader=self.grader,
                position=self.position,
                qa_framing=self.qa_framing,
                on_progress=self.on_progress,
                errors=self.errors,
                flow=self.flow,
            )
        if report.stopped == "budget":
            # A score on the examples the budget allowed would mislead the optimizer.
            raise BudgetExceeded(f"the budget ran out while scoring on the {split} split")
        return [
            SolutionScore(
                score=s.accuracy,
                spend=s.spend,
                cache_hits=s.cache_hits,
                errors=s.errors,
                detail={
                    "correct": s.correct,
                    "correct_reference": s.correct_reference,
                    "graded": s.graded,
                    "n": s.n,
                    # which training examples it missed: the exemplar rules read them
                    **({"wrong": _indexed(s.wrong, indices)} if split == "train" else {}),
                },
                by_grading={"strict": s.accuracy, "reference": s.accuracy_reference},
                truncated=s.truncated,
            )
            for s in report.instructions
        ]


def _indexed(wrong: Sequence[int], indices: Sequence[int] | None) -> list[int]:
    """Positions in a scored subset as training indices, sorted (all of train: as given)."""
    return list(wrong) if indices is None else sorted(indices[i] for i in wrong)
