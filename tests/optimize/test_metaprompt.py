"""Meta-prompt formats and options: golden texts for each style, one test per paper option."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from opro.optimize.metaprompt import (
    InstructionPart,
    MetaPromptConfig,
    Scored,
    bucket,
    build_meta_prompt,
    select,
)
from opro.tasks.types import Example

TRAIN = [Example("What is 2+2?", "4", id="a"), Example("What is 3+4?", "7", id="b")]
HISTORY = [Scored("Solve it.", 0.5, 0), Scored("Think.", 0.726, 1), Scored("Go slowly.", 0.3, 1)]


def build(
    style: str = "instruction-tuned",
    *,
    position: str = "Q_begin",
    qa: bool = True,
    history: list[Scored] = HISTORY,
    train: list[Example] = TRAIN,
    seed: int = 0,
    **options: object,
) -> str:
    cfg = MetaPromptConfig(style=style, **options)  # type: ignore[arg-type]
    part = InstructionPart(train, position, qa, task_description="arithmetic")  # type: ignore[arg-type]
    return build_meta_prompt(history, part, cfg, random.Random(seed)).text


INSTRUCTION_TUNED = """\
Below are some texts, each followed by its score; a higher score means a better text. \
They are listed from the lowest score to the highest.

text:
Go slowly.
score:
30

text:
Solve it.
score:
50

text:
Think.
score:
73

This is how your text is used: it replaces <INS> in each input below, a model reads the \
result and answers, and the answer counts as correct only if it is the same as the output shown.

input:
Q: <INS>
What is 2+2?

A:
output:
4

input:
Q: <INS>
What is 3+4?

A:
output:
7

Write a new text that is different from every text above and would score as high as \
possible. Write the text in square brackets."""

GPT_A_BEGIN = """\
Your job is to write the sentence <Start> that starts every answer. Below are earlier \
attempts, with their scores; a score ranges from 0 to 100. They are listed from the lowest \
score to the highest.

text:
Go slowly.
score:
30

text:
Solve it.
score:
50

text:
Think.
score:
73

Here are problems it will be used on; <Start> marks where it goes.

Problem:
Q: What is 2+2?

A: <Start>
Correct answer:
4

Problem:
Q: What is 3+4?

A: <Start>
Correct answer:
7

Write a new starting sentence that is different from every starting sentence <Start> above \
and would score higher than all of them. Begin it with <Start> and end it with </Start>. \
Keep it concise, effective and useful for every problem above."""

PRETRAINED = """\
Write a piece of text at the start of the question that raises the precision of solving \
assorted arithmetic problems.

Precision: 30 <TEXT>Go slowly.</TEXT>

Precision: 50 <TEXT>Solve it.</TEXT>

Precision: 73 <TEXT>Think.</TEXT>"""


def test_instruction_tuned_golden() -> None:
    assert build(exemplars=2) == INSTRUCTION_TUNED


def test_gpt_style_uses_tags_and_a_0_to_100_scale() -> None:
    text = build("gpt", exemplars=2)
    assert text.startswith(
        "Your job is to write the instruction <INS>. Below are earlier attempts, with their "
        "scores; a score ranges from 0 to 100."
    )
    assert "Problem:\nQ: <INS>\nWhat is 2+2?\n\nA:\nCorrect answer:\n4" in text
    assert text.endswith(
        "Begin it with <INS> and end it with </INS>. "
        "Keep it concise, effective and useful for every problem above."
    )
    assert "square brackets" not in text


def test_gpt_style_calls_an_answer_opener_start() -> None:
    assert build("gpt", position="A_begin", exemplars=2) == GPT_A_BEGIN


def test_pretrained_golden_has_no_exemplars_and_no_request() -> None:
    assert build("pretrained", exemplars=3) == PRETRAINED


def test_pretrained_names_the_position() -> None:
    assert build("pretrained", position="Q_end").startswith(
        "Write a piece of text at the end of the question"
    )
    assert "at the start of the answer" in build("pretrained", position="A_begin")


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("ascending", ["Go slowly.", "Solve it.", "Think."]),
        ("descending", ["Think.", "Solve it.", "Go slowly."]),
    ],
)
def test_order(order: str, expected: list[str]) -> None:
    cfg = MetaPromptConfig(order=order)  # type: ignore[arg-type]
    assert [s.solution for s in select(HISTORY, cfg, random.Random(0))] == expected


def test_random_order_is_a_seeded_permutation() -> None:
    history = [Scored(f"Text {i}.", i / 10, i) for i in range(10)]
    cfg = MetaPromptConfig(order="random")
    first = [s.solution for s in select(history, cfg, random.Random(7))]
    again = [s.solution for s in select(history, cfg, random.Random(7))]
    assert first == again
    assert sorted(first) == sorted(h.solution for h in history)
    assert first != [h.solution for h in history]
    assert "They are listed in no particular order." in build(order="random")


def test_descending_order_is_announced() -> None:
    text = build(order="descending")
    assert "They are listed from the highest score to the lowest." in text
    assert text.index("Think.") < text.index("Go slowly.")


def test_only_the_best_are_shown_and_ties_keep_the_later_one() -> None:
    history = [Scored(f"Text {i}.", 0.1 * (i % 5), i) for i in range(30)]
    shown = select(history, MetaPromptConfig(max_shown=20), random.Random(0))
    assert len(shown) == 20
    assert min(s.score for s in shown) == pytest.approx(0.1)
    # Five entries score 0.1 and only two of them fit: the two found last (as in the paper).
    assert [s.step for s in shown if s.score == pytest.approx(0.1)] == [21, 26]
    assert [
        s.solution for s in select(HISTORY, MetaPromptConfig(max_shown=2), random.Random())
    ] == [
        "Solve it.",
        "Think.",
    ]


def test_twenty_buckets_and_no_scores() -> None:
    assert "text:\nThink.\nscore:\n15" in build(score_buckets=20)
    assert bucket(0.726, 100) == 73 and bucket(1.2, 100) == 100
    hidden = build(score_buckets=None, exemplars=0)
    assert "score:" not in hidden
    assert hidden.startswith("Below are some texts, listed from the worst to the best.")
    assert "text:\nGo slowly.\n\ntext:\nSolve it.\n\ntext:\nThink." in hidden
    assert "Precision" not in build("pretrained", score_buckets=None)
    assert "<TEXT>Think.</TEXT>" in build("pretrained", score_buckets=None)
    assert "ranges from 0 to 20" in build("gpt", score_buckets=20)


def test_minimum_score_shown() -> None:
    text = build(min_score=0.4)
    assert "Go slowly." not in text
    assert "Solve it." in text and "Think." in text


@pytest.mark.parametrize("count", [0, 3, 10])
def test_exemplar_counts(count: int) -> None:
    train = [Example(f"Question {i}?", str(i), id=f"q{i}") for i in range(12)]
    cfg = MetaPromptConfig(exemplars=count)
    part = InstructionPart(train)
    mp = build_meta_prompt(HISTORY, part, cfg, random.Random(3))
    assert len(mp.exemplar_ids) == count
    assert mp.text.count("input:\n") == count
    assert ("replaces <INS>" in mp.text) == (count > 0)
    ids = [int(i[1:]) for i in mp.exemplar_ids]
    assert ids == sorted(ids) and len(set(ids)) == count  # drawn without replacement
    again = build_meta_prompt(HISTORY, part, cfg, random.Random(3))
    assert again == mp  # the same seed draws the same exemplars


def test_more_exemplars_than_training_examples_shows_them_all() -> None:
    assert build(exemplars=10).count("input:\n") == 2


def test_exemplars_can_come_first() -> None:
    text = build(exemplars=1, exemplars_first=True)
    assert text.startswith("This is how your text is used")
    assert text.index("output:") < text.index("Below are some texts")
    assert text.endswith("Write the text in square brackets.")


@pytest.mark.parametrize(
    ("position", "qa", "shown"),
    [
        ("Q_begin", True, "input:\nQ: <INS>\nWhat is 2+2?\n\nA:\noutput:"),
        ("Q_end", True, "input:\nQ: What is 2+2?\n<INS>\n\nA:\noutput:"),
        ("A_begin", True, "input:\nQ: What is 2+2?\n\nA: <INS>\noutput:"),
        ("before_Q", True, "input:\n<INS>\nQ: What is 2+2?\n\nA:\noutput:"),
        ("Q_begin", False, "input:\n<INS>\nWhat is 2+2?\noutput:"),
        ("Q_end", False, "input:\nWhat is 2+2?\n<INS>\noutput:"),
    ],
)
def test_exemplars_show_where_the_instruction_goes(position: str, qa: bool, shown: str) -> None:
    assert shown in build(position=position, qa=qa, exemplars=2)


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        MetaPromptConfig(style="chatty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_shown"):
        MetaPromptConfig(max_shown=0)
    with pytest.raises(ValueError, match="exemplars"):
        MetaPromptConfig(exemplars=-1)


@dataclass(frozen=True)
class ValuePart:
    """A minimal non-prompt part (lower is better), as linear regression would write one."""

    def intro(self, cfg: MetaPromptConfig) -> str:
        return "Pairs, worst first:"

    def entry(self, item: Scored, cfg: MetaPromptConfig) -> str:
        return f"input:\n{item.solution}\nvalue:\n{item.score:g}"

    def examples(self, rng: random.Random, cfg: MetaPromptConfig) -> tuple[str, tuple[str, ...]]:
        return "", ()

    def outro(self, cfg: MetaPromptConfig) -> str:
        return "Give a new pair."


def test_the_builder_is_generic_over_lower_is_better_problems() -> None:
    history = [Scored("w=1, b=1", 50.0), Scored("w=2, b=2", 10.0), Scored("w=3, b=3", 900.0)]
    text = build_meta_prompt(
        history,
        ValuePart(),
        MetaPromptConfig(max_shown=2),
        random.Random(0),
        higher_is_better=False,
    ).text
    assert text == (
        "Pairs, worst first:\n\ninput:\nw=1, b=1\nvalue:\n50\n\n"
        "input:\nw=2, b=2\nvalue:\n10\n\nGive a new pair."
    )
