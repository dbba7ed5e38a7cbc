"""The reference's four exemplar rules on known wrong-answer histories."""

from __future__ import annotations

import random

import pytest

from opro.optimize.exemplars import choose_exemplars
from opro.optimize.metaprompt import InstructionPart, MetaPromptConfig, Scored, build_meta_prompt
from opro.tasks.types import Example

N_TRAIN = 10
TRAIN = [Example(f"Question {i}?", str(i), id=f"q{i}") for i in range(N_TRAIN)]
# Examples 2 (three misses), 1 (two), 0, 5, 7 (one each) were got wrong; 3, 4, 6, 8, 9 never.
HISTORY = [
    Scored("Start.", 0.5, 0, wrong=(0, 1, 2)),
    Scored("Better.", 0.6, 1, wrong=(1, 2, 5)),
    Scored("Worse.", 0.2, 1, wrong=(2, 7)),
]
NEVER_WRONG = {3, 4, 6, 8, 9}


def choose(
    rule: str, history: list[Scored] = HISTORY, seed: int = 0, **options: object
) -> tuple[int, ...] | None:
    cfg = MetaPromptConfig(exemplar_selection=rule, **options)  # type: ignore[arg-type]
    return choose_exemplars(history, cfg, N_TRAIN, random.Random(seed))


def test_random_leaves_the_draw_to_the_step() -> None:
    assert choose("random") is None


def test_constant_shows_the_same_examples_every_step() -> None:
    draws = {choose("constant", seed=s) for s in range(20)}
    assert draws == {tuple(sorted(random.Random(0).sample(range(N_TRAIN), 3)))}
    assert choose("constant", history=[]) == next(iter(draws))


def test_accumulative_draws_among_every_example_ever_missed() -> None:
    seen: set[int] = set()
    for seed in range(200):
        picked = choose("accumulative_most_frequent", seed=seed)
        assert picked is not None and len(picked) == 3 and list(picked) == sorted(picked)
        assert not set(picked) & NEVER_WRONG
        seen.update(picked)
    assert seen == {0, 1, 2, 5, 7}  # uniform over the pool, as the reference draws


def test_accumulative_with_few_misses_shows_them_all_most_missed_first() -> None:
    history = [Scored("A.", 0.9, 0, wrong=(6,)), Scored("B.", 0.8, 1, wrong=(4, 6))]
    assert choose("accumulative_most_frequent", history=history) == (6, 4)
    assert choose("accumulative_most_frequent", history=history[:1]) == (6,)


def test_current_counts_only_the_instructions_the_meta_prompt_lists() -> None:
    # "Worse." (0.2) is below the threshold, so example 7 and its third miss of 2 do not count:
    # 1 and 2 are missed twice (fewer than 3 at the top), then 0 before 5 (tie, lower index).
    assert choose("current_most_frequent", min_score=0.3) == (1, 2, 0)
    # Without a threshold every instruction counts: 2 three times, 1 twice, then 0.
    assert choose("current_most_frequent") == (2, 1, 0)
    # With the listing capped at the best one, only "Better." counts.
    assert choose("current_most_frequent", max_shown=1) == (1, 2, 5)


def test_current_ignores_the_threshold_before_anything_proposed_was_scored() -> None:
    start = [Scored("A.", 0.1, 0, wrong=(8, 9)), Scored("B.", 0.2, 0, wrong=(9,))]
    assert choose("current_most_frequent", history=start, min_score=0.3) == (9, 8)
    later = [*start, Scored("C.", 0.5, 1, wrong=(3,))]
    assert choose("current_most_frequent", history=later, min_score=0.3) == (3,)


def test_current_draws_among_the_most_missed_when_there_are_enough() -> None:
    history = [
        Scored("A.", 0.5, 0, wrong=(0, 1, 2, 3)),
        Scored("B.", 0.4, 1, wrong=(0, 1, 2, 3, 9)),
    ]
    draws = {choose("current_most_frequent", history=history, seed=s) for s in range(100)}
    assert all(len(d or ()) == 3 and not set(d or ()) - {0, 1, 2, 3} for d in draws)
    assert len(draws) > 1  # a draw, not a fixed pick


@pytest.mark.parametrize("rule", ["accumulative_most_frequent", "current_most_frequent"])
def test_nothing_missed_or_no_record_shows_no_examples(rule: str) -> None:
    assert choose(rule, history=[Scored("A.", 1.0, 0, wrong=())]) == ()
    assert choose(rule, history=[Scored("A.", 0.5, 0)]) == ()


@pytest.mark.parametrize(
    "rule", ["constant", "accumulative_most_frequent", "current_most_frequent"]
)
def test_no_exemplars_asked_for_none_shown(rule: str) -> None:
    assert choose(rule, exemplars=0) == ()


def test_the_chosen_examples_are_what_the_meta_prompt_shows() -> None:
    cfg = MetaPromptConfig(exemplar_selection="accumulative_most_frequent", exemplars=3)
    history = [Scored("A.", 0.9, 0, wrong=(6,)), Scored("B.", 0.8, 1, wrong=(4, 6))]
    chosen = choose_exemplars(history, cfg, N_TRAIN, random.Random(0))
    part = InstructionPart(TRAIN, chosen=chosen)
    meta = build_meta_prompt(history, part, cfg, random.Random(0))
    assert meta.exemplar_ids == ("q6", "q4")
    assert meta.text.index("Question 6?") < meta.text.index("Question 4?")
    empty = build_meta_prompt(history, InstructionPart(TRAIN, chosen=()), cfg, random.Random(0))
    assert empty.exemplar_ids == () and "replaces <INS>" not in empty.text
