"""Meta-prompts: what the optimizer model reads at each step of an OPRO run.

A meta-prompt has a generic half and a per-problem half. The generic half, `build_meta_prompt`,
decides which earlier solutions are shown and how, with the options the paper studied (its
section 5.3): the best `max_shown` of them (20), ordered worst-to-best ("ascending", the
default, so the best sits closest to the request), best-to-worst or at random, with scores
shown as round(100 * accuracy), round(20 * accuracy) or not at all, and only those at or above
`min_score`. "auto" settings follow the paper's reference code: the style is chosen from the
optimizer model, and the threshold and cap from the style and scorer (`protocol.resolve_meta`,
which `optimize` applies before the first step). The per-problem half, a `MetaPromptPart`,
words the task: the introduction, how one solution and its score look, which task examples are
shown, and the closing request. So linear regression or TSP supply their own part and reuse
everything else.

`InstructionPart` is the part for prompt optimization, in the three styles of the paper's
appendix C.2: "instruction-tuned" (text/score pairs, exemplars whose input shows where the
instruction goes as <INS>, the answer asked for in square brackets), "gpt" (the instruction is
called <INS>, scores are said to range from 0 to 100, the answer is asked for between <INS> tags;
<Start> tags when the instruction starts the answer) and "pretrained" (a one-line task statement,
then `Precision: N <TEXT>...</TEXT>` lines for a completion model to continue, no exemplars).

Data enters as scored history plus the step's `random.Random`; it leaves as a `MetaPrompt`
(the text, what was shown, which examples were drawn) for the step record.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from opro.checks import SCORE, IntRange
from opro.errors import SettingsError
from opro.tasks.prompts import Position, render_prompt
from opro.tasks.types import Example

Style = Literal["instruction-tuned", "gpt", "pretrained"]
Order = Literal["ascending", "descending", "random"]
Auto = Literal["auto"]
# Which training examples a meta-prompt shows (the reference's `few_shot_selection_criteria`).
ExemplarRule = Literal["random", "constant", "accumulative_most_frequent", "current_most_frequent"]
# How candidates are read from an optimizer's answer: ours, or only what the reference takes.
Extraction = Literal["lenient", "reference"]
STYLES: tuple[str, ...] = get_args(Style)
ORDERS: tuple[str, ...] = get_args(Order)
SHOWN = IntRange(1, 10_000)  # earlier solutions shown
BUCKETS = IntRange(1, 1_000_000)  # score granularity (100: percent)
EXEMPLARS = IntRange(0, 1_000)  # task examples shown
EXEMPLAR_RULES: tuple[str, ...] = get_args(ExemplarRule)
EXTRACTIONS: tuple[str, ...] = get_args(Extraction)
# The reference's cap on earlier instructions in the chat styles (it shows all in pretrained).
REFERENCE_MAX_SHOWN = 20


@dataclass(frozen=True, slots=True)
class MetaPromptConfig:
    """The paper's meta-prompt options; the defaults are its defaults.

    `score_buckets` None hides the scores (the list keeps its order); `min_score` None shows
    every score; `max_shown` None shows every earlier solution. "auto" (style, max_shown,
    min_score) means "as the reference code decides" and is resolved by `optimize`; left
    unresolved, "auto" reads as the instruction-tuned style, the cap of 20 (none in the
    pretrained style) and no threshold. `exemplars_first` puts the task examples before the
    solutions; `exemplar_selection` picks them (see `exemplars.py`). `extraction` says how the
    optimizer's answers to this meta-prompt are read (see `candidates.py`).
    """

    style: Style | Auto = "auto"
    max_shown: int | Auto | None = REFERENCE_MAX_SHOWN
    order: Order = "ascending"
    score_buckets: int | None = 100
    min_score: float | Auto | None = None
    exemplars: int = 3
    exemplars_first: bool = False
    exemplar_selection: ExemplarRule = "random"
    extraction: Extraction = "lenient"

    def __post_init__(self) -> None:
        if self.style not in (*STYLES, "auto"):
            raise SettingsError(
                f"unknown meta-prompt style {self.style!r}; use auto, {', '.join(STYLES)}"
            )
        if self.order not in ORDERS:
            raise SettingsError(f"unknown order {self.order!r}; use {', '.join(ORDERS)}")
        if self.max_shown not in (None, "auto"):
            SHOWN.check("max_shown", self.max_shown)
        if self.min_score not in (None, "auto"):
            SCORE.check("min_score", self.min_score)
        if self.exemplar_selection not in EXEMPLAR_RULES:
            raise SettingsError(
                f"unknown exemplar selection {self.exemplar_selection!r}; "
                f"use {', '.join(EXEMPLAR_RULES)}"
            )
        if self.extraction not in EXTRACTIONS:
            raise SettingsError(
                f"unknown extraction {self.extraction!r}; use {', '.join(EXTRACTIONS)}"
            )
        if self.score_buckets is not None:
            BUCKETS.check("score_buckets", self.score_buckets)
        EXEMPLARS.check("exemplars", self.exemplars)


@dataclass(frozen=True, slots=True)
class Scored:
    """A solution with its (training) score and the step that found it.

    `wrong` holds the indices of the training examples it got wrong, when the problem reports
    them (prompt problems do); the exemplar rules that favour hard examples read them.
    """

    solution: str
    score: float
    step: int = 0
    wrong: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class MetaPrompt:
    text: str
    shown: tuple[Scored, ...]
    exemplar_ids: tuple[str, ...] = ()


class MetaPromptPart(Protocol):
    """The problem-specific wording of a meta-prompt; each method returns one block."""

    def intro(self, cfg: MetaPromptConfig) -> str: ...

    def entry(self, item: Scored, cfg: MetaPromptConfig) -> str: ...

    def examples(self, rng: random.Random, cfg: MetaPromptConfig) -> tuple[str, tuple[str, ...]]:
        """The task-examples block ("" for none) and the ids of the examples drawn."""
        ...

    def outro(self, cfg: MetaPromptConfig) -> str: ...


def bucket(score: float, buckets: int) -> int:
    """An accuracy in [0, 1] as an integer 0..buckets, rounded like the paper's code."""
    return round(min(1.0, max(0.0, score)) * buckets)


def shown_cap(cfg: MetaPromptConfig) -> int | None:
    """How many earlier solutions are shown at most (None: all of them)."""
    if cfg.max_shown == "auto":
        return None if cfg.style == "pretrained" else REFERENCE_MAX_SHOWN
    return cfg.max_shown


def shown_threshold(cfg: MetaPromptConfig) -> float | None:
    """The lowest score shown (None: every score); an unresolved "auto" shows every score."""
    return None if cfg.min_score == "auto" else cfg.min_score


def select(
    history: Sequence[Scored],
    cfg: MetaPromptConfig,
    rng: random.Random,
    *,
    higher_is_better: bool = True,
) -> list[Scored]:
    """The solutions to show, in display order.

    As in the paper's code, the list is sorted worst-to-best with a stable sort (so among equal
    scores the later one counts as better) and its last `max_shown` entries are kept.
    """
    sign = 1.0 if higher_is_better else -1.0
    threshold = shown_threshold(cfg)
    kept = [h for h in history if threshold is None or sign * h.score >= sign * threshold]
    worst_to_best = sorted(kept, key=lambda h: sign * h.score)
    cap = shown_cap(cfg)
    if cap is not None:
        worst_to_best = worst_to_best[-cap:]
    if cfg.order == "ascending":
        return worst_to_best
    if cfg.order == "descending":
        return worst_to_best[::-1]
    shuffled = list(worst_to_best)
    rng.shuffle(shuffled)
    return shuffled


def build_meta_prompt(
    history: Sequence[Scored],
    part: MetaPromptPart,
    cfg: MetaPromptConfig,
    rng: random.Random,
    *,
    higher_is_better: bool = True,
) -> MetaPrompt:
    """Assemble intro, solutions, examples and request, blocks separated by a blank line.

    `rng` is used in a fixed order (shuffle first, then the example draw), so one seed per
    step reproduces the same meta-prompt on a resumed run.
    """
    shown = select(history, cfg, rng, higher_is_better=higher_is_better)
    examples, ids = part.examples(rng, cfg)
    listing = [part.intro(cfg), *(part.entry(item, cfg) for item in shown)]
    blocks = [examples, *listing] if cfg.exemplars_first else [*listing, examples]
    blocks.append(part.outro(cfg))
    text = "\n\n".join(b for b in blocks if b)
    return MetaPrompt(text=text, shown=tuple(shown), exemplar_ids=ids)


_WHERE: dict[str, str] = {
    "Q_begin": "at the start of the question",
    "Q_end": "at the end of the question",
    "A_begin": "at the start of the answer",
    "before_Q": "before the question",
}


def _order_phrase(cfg: MetaPromptConfig) -> str:
    scored = cfg.score_buckets is not None
    if cfg.order == "random":
        return "in no particular order"
    low_high = cfg.order == "ascending"
    if scored:
        return (
            "from the lowest score to the highest"
            if low_high
            else ("from the highest score to the lowest")
        )
    return "from the worst to the best" if low_high else "from the best to the worst"


@dataclass(frozen=True, slots=True)
class InstructionPart:
    """Meta-prompt wording for optimizing an instruction inserted into a task's questions.

    `train` is where exemplars are drawn from; `position` and `qa_framing` render them exactly
    as the scorer will see its prompts, with the placeholder where the instruction goes.
    `task_description` names the task in the pretrained style ("grade school math").
    `chosen` (indices into `train`, in display order) replaces the random draw when an
    exemplar rule other than "random" picked the examples.
    """

    train: Sequence[Example]
    position: Position = "Q_begin"
    qa_framing: bool = True
    task_description: str = "the given"
    chosen: tuple[int, ...] | None = None

    def tag(self, cfg: MetaPromptConfig) -> str:
        """The placeholder name: GPT-style meta-prompts call an answer opener <Start>."""
        return "Start" if cfg.style == "gpt" and self.position == "A_begin" else "INS"

    def intro(self, cfg: MetaPromptConfig) -> str:
        scale = cfg.score_buckets
        if cfg.style == "pretrained":
            where = _WHERE[self.position]
            return (
                f"Write a piece of text {where} that raises the precision of solving "
                f"assorted {self.task_description} problems."
            )
        order = _order_phrase(cfg)
        if cfg.style == "gpt":
            tag = f"<{self.tag(cfg)}>"
            what = (
                f"the sentence {tag} that starts every answer"
                if self.position == "A_begin"
                else f"the instruction {tag}"
            )
            scores = f", with their scores; a score ranges from 0 to {scale}" if scale else ""
            return (
                f"Your job is to write {what}. Below are earlier attempts{scores}. "
                f"They are listed {order}."
            )
        if scale is None:
            return f"Below are some texts, listed {order}."
        return (
            "Below are some texts, each followed by its score; a higher score means a better "
            f"text. They are listed {order}."
        )

    def entry(self, item: Scored, cfg: MetaPromptConfig) -> str:
        scale = cfg.score_buckets
        if cfg.style == "pretrained":
            text = f"<TEXT>{item.solution}</TEXT>"
            return f"Precision: {bucket(item.score, scale)} {text}" if scale else text
        if scale is None:
            return f"text:\n{item.solution}"
        return f"text:\n{item.solution}\nscore:\n{bucket(item.score, scale)}"

    def examples(self, rng: random.Random, cfg: MetaPromptConfig) -> tuple[str, tuple[str, ...]]:
        if cfg.style == "pretrained" or cfg.exemplars == 0 or not self.train:
            return "", ()
        if self.chosen is not None:
            drawn = list(self.chosen)
        else:
            k = min(cfg.exemplars, len(self.train))
            drawn = sorted(rng.sample(range(len(self.train)), k))
        if not drawn:
            return "", ()
        placeholder = f"<{self.tag(cfg)}>"
        rows: list[str] = []
        for i in drawn:
            ex = self.train[i]
            shown = render_prompt(placeholder, ex.input, self.position, qa_framing=self.qa_framing)
            if cfg.style == "gpt":
                rows.append(f"Problem:\n{shown}\nCorrect answer:\n{ex.target}")
            else:
                rows.append(f"input:\n{shown}\noutput:\n{ex.target}")
        if cfg.style == "gpt":
            head = f"Here are problems it will be used on; {placeholder} marks where it goes."
        else:
            head = (
                "This is how your text is used: it replaces <INS> in each input below, a model "
                "reads the result and answers, and the answer counts as correct only if it "
                "is the same as the output shown."
            )
        ids = tuple(self.train[i].id or str(i) for i in drawn)
        return "\n\n".join([head, *rows]), ids

    def outro(self, cfg: MetaPromptConfig) -> str:
        if cfg.style == "pretrained":
            return ""
        if cfg.style == "gpt":
            tag = self.tag(cfg)
            what = "starting sentence" if tag == "Start" else "instruction"
            return (
                f"Write a new {what} that is different from every {what} <{tag}> above and "
                f"would score higher than all of them. Begin it with <{tag}> and end it with "
                f"</{tag}>. "
                "Keep it concise, effective and useful for every problem above."
            )
        goal = "would score as high as possible" if cfg.score_buckets else "would work best"
        return (
            f"Write a new text that is different from every text above and {goal}. "
            "Write the text in square brackets."
        )
