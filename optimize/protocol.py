"""Our protocol and the paper's: the settings that decide whether a number compares with the paper.

The paper's accuracies come from its reference code (google-deepmind/opro). Where our
defaults differ from it we have a reason (README, "Protocols"); `protocol_preset("paper")`
gives the reference's settings in one object, and `opro ... --protocol paper` applies them
to every setting not given explicitly. The facts encoded here, from the reference code:

* the scorer decodes up to 1024 tokens, with no Q:/A: framing for either scorer kind (the
  positions that start the answer or precede "Q:" cannot exist without it);
* the meta-prompt style follows the optimizer: GPT models get the GPT style, every other
  model the instruction-tuned style (the pretrained style is only ever asked for);
* earlier instructions are listed only when they scored at least 0.3 if the scorer is a GPT
  model, 0.0 otherwise (`old_instruction_score_threshold`, chosen from the *scorer*); the
  pretrained style lists every one of them, uncapped and unfiltered; the chat styles the
  best 20;
* exemplars are drawn at random every step; answers are read by `candidates.extract_reference`;
  the grader is the reference's (`PAPER_GRADING`, the grading setting of `tasks/grading.py`).

`resolve_meta` turns "auto" meta-prompt settings into concrete ones for a given optimizer
and problem, so config.json records what was actually used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from opro.optimize.metaprompt import REFERENCE_MAX_SHOWN, MetaPromptConfig, Style
from opro.tasks.datasets import DATA_TASKS
from opro.tasks.prompts import Position, needs_qa_framing

ProtocolName = Literal["ours", "paper"]
PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)

# The reference decodes every scorer answer up to this many tokens.
PAPER_SCORER_MAX_TOKENS = 1024
# Our default elsewhere: answers to user tasks are usually short, and each token is paid for.
OTHER_TASK_SCORER_MAX_TOKENS = 256
# Grading settings by name; the grader module maps them to graders ("strict" is ours).
OURS_GRADING = "strict"
PAPER_GRADING = "reference"
# The reference's score thresholds for listing earlier instructions, by scorer.
GPT_SCORER_MIN_SCORE = 0.3
OTHER_SCORER_MIN_SCORE = 0.0


@dataclass(frozen=True, slots=True)
class ProtocolPreset:
    """Every setting a protocol fixes, for library users (the CLI applies the same values).

    `scorer_max_tokens` None means the task's default (`default_scorer_max_tokens`);
    `qa_framing` None means off unless the position needs it (`default_qa_framing`).
    Use it as ``engine.model(spec, decoding=Decoding(max_tokens=p.scorer_max_tokens or ...))``,
    ``PromptProblem(..., qa_framing=p.qa_framing)`` and
    ``OptimizeConfig(meta=p.meta, protocol=p.name)``.
    """

    name: ProtocolName
    scorer_max_tokens: int | None
    qa_framing: bool | None
    grading: str
    meta: MetaPromptConfig


def protocol_preset(name: str) -> ProtocolPreset:
    """The settings of protocol `name` ("ours" or "paper")."""
    if name == "ours":
        return ProtocolPreset("ours", None, None, OURS_GRADING, MetaPromptConfig())
    if name == "paper":
        meta = MetaPromptConfig(
            style="auto",
            max_shown="auto",
            min_score="auto",
            exemplar_selection="random",
            extraction="reference",
        )
        return ProtocolPreset("paper", PAPER_SCORER_MAX_TOKENS, None, PAPER_GRADING, meta)
    raise ValueError(f"unknown protocol {name!r}; use {', '.join(PROTOCOLS)}")


def is_paper_task(name: str) -> bool:
    """GSM8K, BBH, MultiArith and AQuA: the tasks the paper reports."""
    return name.strip().lower() in DATA_TASKS


def default_scorer_max_tokens(task: str | None) -> int:
    """Non-embedded scorers: the reference's 1024 on the paper's tasks, else 256."""
    if task is not None and is_paper_task(task):
        return PAPER_SCORER_MAX_TOKENS
    return OTHER_TASK_SCORER_MAX_TOKENS


def default_qa_framing(position: Position) -> bool:
    """No Q:/A: framing, as the reference's default, unless the position needs it."""
    return needs_qa_framing(position)


def is_gpt(spec: str) -> bool:
    """Whether `provider/model` names a GPT model (the reference's gpt-3.5-turbo, gpt-4)."""
    return spec.rsplit("/", 1)[-1].strip().lower().startswith("gpt-")


def style_for(optimizer_spec: str) -> Style:
    """The meta-prompt style the reference would use with this optimizer."""
    return "gpt" if is_gpt(optimizer_spec) else "instruction-tuned"


def reference_min_score(scorer_spec: str) -> float:
    """The reference's listing threshold for the chat styles, chosen by the scorer."""
    return GPT_SCORER_MIN_SCORE if is_gpt(scorer_spec) else OTHER_SCORER_MIN_SCORE


def resolve_meta(meta: MetaPromptConfig, optimizer_spec: str, problem: Any) -> MetaPromptConfig:
    """`meta` with every "auto" replaced by what the reference would use.

    The threshold is a score, so only a problem that knows its reference threshold (one with
    a `reference_min_score()` method, like `PromptProblem`) gets one; others list everything.
    """
    style: Style = style_for(optimizer_spec) if meta.style == "auto" else meta.style
    max_shown = meta.max_shown
    if max_shown == "auto":
        max_shown = None if style == "pretrained" else REFERENCE_MAX_SHOWN
    min_score = meta.min_score
    if min_score == "auto":
        hook: Callable[[], float] | None = getattr(problem, "reference_min_score", None)
        min_score = None if style == "pretrained" or hook is None else hook()
    return replace(meta, style=style, max_shown=max_shown, min_score=min_score)
