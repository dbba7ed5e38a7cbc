"""The paper's protocol as settings: presets, "auto" resolution, listing rules, extraction.

The expected values are facts read from the paper's reference code (google-deepmind/opro,
`optimize_instructions.py` and `opt_utils.py`): 1024 scorer tokens, no Q:/A: framing, a
listing threshold of 0.3 for GPT scorers and 0.0 for text-bison, the best 20 in the chat
styles and every instruction in the pretrained style, random exemplars.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import pytest

from opro.optimize.candidates import extract_reference
from opro.optimize.metaprompt import (
    InstructionPart,
    MetaPromptConfig,
    Scored,
    build_meta_prompt,
    select,
    shown_cap,
)
from opro.optimize.protocol import (
    PAPER_GRADING,
    default_qa_framing,
    default_scorer_max_tokens,
    is_gpt,
    protocol_preset,
    reference_min_score,
    resolve_meta,
    style_for,
)
from opro.tasks.types import Example

TRAIN = [Example(f"What is {i}+1?", str(i + 1), id=f"q{i}") for i in range(6)]
# 25 instructions scoring 0.00, 0.04, ..., 0.96, found one per step.
HISTORY = [Scored(f"Instruction {i}.", round(0.04 * i, 2), i) for i in range(25)]


class PromptLike:
    """A problem that knows its reference threshold, as `PromptProblem` does."""

    def __init__(self, scorer: str) -> None:
        self.scorer = scorer

    def reference_min_score(self) -> float:
        return reference_min_score(self.scorer)


def listed(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Instruction " in line]


def test_presets_hold_the_reference_settings() -> None:
    paper = protocol_preset("paper")
    assert paper.name == "paper" and paper.scorer_max_tokens == 1024
    assert paper.qa_framing is None  # off unless the position needs it
    assert paper.grading == PAPER_GRADING == "reference"
    m = paper.meta
    assert (m.style, m.max_shown, m.min_score) == ("auto", "auto", "auto")
    assert (m.exemplar_selection, m.exemplars, m.order, m.score_buckets) == (
        "random",
        3,
        "ascending",
        100,
    )
    assert m.extraction == "reference" and m.exemplars_first is False
    ours = protocol_preset("ours")
    assert ours.scorer_max_tokens is None and ours.grading == "strict"
    assert (ours.meta.max_shown, ours.meta.min_score, ours.meta.extraction) == (
        20,
        None,
        "lenient",
    )
    assert ours.meta.style == "auto" and ours.meta == MetaPromptConfig()
    with pytest.raises(ValueError, match="unknown protocol 'theirs'"):
        protocol_preset("theirs")


@pytest.mark.parametrize(
    ("task", "tokens"),
    [
        ("gsm8k", 1024),
        ("bbh/navigate", 1024),
        ("BBH/word_sorting", 1024),
        ("multiarith", 1024),
        ("aqua", 1024),
        ("synthetic/arithmetic", 256),
        ("my_data.jsonl", 256),
        (None, 256),
    ],
)
def test_scorer_max_tokens_default_to_the_papers_on_its_tasks(
    task: str | None, tokens: int
) -> None:
    assert default_scorer_max_tokens(task) == tokens


def test_framing_is_off_unless_the_position_needs_it() -> None:
    assert default_qa_framing("Q_begin") is False and default_qa_framing("Q_end") is False
    assert default_qa_framing("A_begin") is True and default_qa_framing("before_Q") is True


@pytest.mark.parametrize(
    ("spec", "gpt"),
    [
        ("openai/gpt-4o-mini", True),
        ("openai/GPT-4", True),
        ("openai-compatible/gpt-oss-20b", True),
        ("openai/o3", False),
        ("anthropic/claude-3-5-haiku", False),
        ("local/smollm2-135m", False),
        ("google/gemini-2.0-flash", False),
        ("simulated/gpt", False),  # no "gpt-" model name
    ],
)
def test_gpt_models_get_the_gpt_style_and_threshold(spec: str, gpt: bool) -> None:
    assert is_gpt(spec) is gpt
    assert style_for(spec) == ("gpt" if gpt else "instruction-tuned")
    assert reference_min_score(spec) == (0.3 if gpt else 0.0)


def test_auto_is_resolved_from_the_optimizer_and_the_scorer() -> None:
    paper = protocol_preset("paper").meta
    gpt = resolve_meta(paper, "openai/gpt-4o", PromptLike("openai/gpt-4o-mini"))
    assert (gpt.style, gpt.max_shown, gpt.min_score) == ("gpt", 20, 0.3)
    bison = resolve_meta(paper, "google/gemini-pro", PromptLike("openai/gpt-4o-mini"))
    assert (bison.style, bison.min_score) == ("instruction-tuned", 0.3)  # the scorer decides
    other = resolve_meta(paper, "openai/gpt-4o", PromptLike("local/smollm2-135m"))
    assert other.min_score == 0.0
    pretrained = resolve_meta(replace(paper, style="pretrained"), "openai/gpt-4o", PromptLike("x"))
    assert (pretrained.style, pretrained.max_shown, pretrained.min_score) == (
        "pretrained",
        None,
        None,
    )
    # A problem without a reference threshold (linear regression, TSP) lists everything.
    assert resolve_meta(paper, "openai/gpt-4o", object()).min_score is None
    # Concrete settings are kept as given.
    given = MetaPromptConfig(style="gpt", max_shown=5, min_score=0.5)
    assert resolve_meta(given, "local/x", PromptLike("openai/gpt-4")) == given


def build(cfg: MetaPromptConfig, history: list[Scored] = HISTORY) -> str:
    part = InstructionPart(TRAIN, "Q_begin", False, task_description="arithmetic")
    return build_meta_prompt(history, part, cfg, random.Random(0)).text


def test_gpt_style_under_the_paper_lists_only_instructions_scoring_030_or_more() -> None:
    cfg = resolve_meta(protocol_preset("paper").meta, "openai/gpt-4", PromptLike("openai/gpt-4"))
    text = build(cfg)
    shown = listed(text)
    # 0.32 .. 0.96 score >= 0.3: 17 of them, fewer than the cap of 20.
    assert shown == [f"Instruction {i}." for i in range(8, 25)]
    assert "Instruction 7." not in text  # 0.28
    assert text.startswith("Your job is to write the instruction <INS>.")


def test_the_chat_styles_list_the_best_twenty() -> None:
    # As the reference: the 20 best, then those at or above the threshold.
    cfg = MetaPromptConfig(style="gpt", max_shown=20, min_score=0.0)
    assert listed(build(cfg)) == [f"Instruction {i}." for i in range(5, 25)]


def test_pretrained_style_under_the_paper_lists_every_instruction_uncapped() -> None:
    meta = replace(protocol_preset("paper").meta, style="pretrained")
    cfg = resolve_meta(meta, "openai/gpt-4", PromptLike("openai/gpt-4"))
    text = build(cfg)
    assert listed(text) == [
        f"Precision: {round(100 * h.score)} <TEXT>{h.solution}</TEXT>" for h in HISTORY
    ]
    assert "Precision: 0 <TEXT>Instruction 0.</TEXT>" in text
    # Ours caps every style at 20.
    ours = listed(build(MetaPromptConfig(style="pretrained")))
    assert len(ours) == 20 and ours[0].endswith("<TEXT>Instruction 5.</TEXT>")


def test_unresolved_auto_reads_as_instruction_tuned_without_threshold() -> None:
    text = build(MetaPromptConfig(style="auto", min_score="auto", max_shown="auto"))
    assert text.endswith("Write the text in square brackets.")
    assert len(listed(text)) == 20
    assert shown_cap(MetaPromptConfig(style="pretrained", max_shown="auto")) is None
    assert len(select(HISTORY, MetaPromptConfig(max_shown=None), random.Random(0))) == 25


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_shown": 0}, "max_shown"),
        ({"max_shown": True}, "max_shown"),
        ({"max_shown": "many"}, "max_shown"),
        ({"min_score": math.nan}, "min_score"),
        ({"min_score": math.inf}, "min_score"),
        ({"min_score": "high"}, "min_score"),
        ({"style": "chatty"}, "style"),
        ({"exemplar_selection": "hardest"}, "exemplar selection"),
        ({"extraction": "greedy"}, "extraction"),
    ],
)
def test_invalid_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetaPromptConfig(**options)


@pytest.mark.parametrize(
    ("style", "tag", "answer", "found"),
    [
        ("instruction-tuned", "INS", "Sure: [Be brief.] and [Be long.]", ["Be brief."]),
        ("instruction-tuned", "INS", "[two\nlines] then [one line]", ["one line"]),
        ("instruction-tuned", "INS", "No brackets at all.", []),
        ("instruction-tuned", "INS", "Empty: [] and [ ]", []),
        ("instruction-tuned", "INS", "<INS>Tagged.</INS>", []),  # only brackets count
        ("gpt", "INS", "Here: <INS>Do it.</INS> <INS>Again.</INS>", ["Do it."]),
        ("gpt", "INS", "  Do it now.  ", ["Do it now."]),  # no tags: the whole answer
        ("gpt", "INS", "Try <INS>Do it.", ["Do it."]),
        ("gpt", "INS", "Do it.</INS> trailing", ["Do it."]),
        ("gpt", "INS", "</INS> closing first <INS>", []),
        ("gpt", "Start", "<Start>Let's go.</Start>", ["Let's go."]),
        ("pretrained", "INS", "<TEXT>a</TEXT> <TEXT>b</TEXT>", ["a"]),
        ("pretrained", "INS", "<TEXT>two\nlines</TEXT>", ["two\nlines"]),
        ("pretrained", "INS", "text without its opening tag</TEXT>", []),
    ],
)
def test_reference_extraction(style: str, tag: str, answer: str, found: list[str]) -> None:
    assert extract_reference(answer, style, tag=tag) == found
