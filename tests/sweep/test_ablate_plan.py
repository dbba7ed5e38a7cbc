"""Planning an ablation: every axis's values are checked before anything runs (one line naming
the axis and what it allows), each axis sets the right setting, per-step and one-shot arms ask
for the same total of candidates, and repeats differ in seed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from opro.errors import SettingsError
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import MetaPromptConfig
from opro.sweep.ablate import plan_arms

BASE = OptimizeConfig(steps=6, candidates_per_step=4, seed=7)


@pytest.mark.parametrize(
    ("axis", "values", "message"),
    [
        ("orders", "ascending", "unknown ablation axis 'orders'; use one of order, buckets"),
        ("order", "ascending,upwards", "axis order: bad value 'upwards'; allowed: ascending, "),
        ("order", "ascending,ascending", "axis order: value ascending is given twice"),
        ("order", "ascending,", "axis order: give its values separated by commas"),
        ("buckets", "none,0", "axis buckets: bad value '0'; allowed: none or an integer from 1"),
        ("buckets", "20,many", "axis buckets: bad value 'many'"),
        ("exemplars", "0,3,-1", "axis exemplars: bad value '-1'; allowed: an integer from 0"),
        ("exemplars", "3.5", "axis exemplars: bad value '3.5'"),
        ("per-step", "0,2", "axis per-step: bad value '0'; allowed: an integer from 1"),
        ("per-step", "5", "axis per-step: 5 does not divide the total of 24 candidates"),
        ("temperature", "0.5,nan", "axis temperature: bad value 'nan'; allowed: a number"),
        ("temperature", "2.5", "axis temperature: bad value '2.5'"),
        ("temperature", "1,1.0", "axis temperature: value 1 is given twice"),
        ("one-shot", "off,maybe", "axis one-shot: bad value 'maybe'; allowed: off, on"),
        ("start", "missing.txt", "axis start: cannot read missing.txt"),
        ("strategy", "opro,annealing", "axis strategy: bad value 'annealing'; allowed: opro,"),
    ],
)
def test_bad_values_are_one_line_naming_the_axis(axis: str, values: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        plan_arms(axis, values, BASE)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_one_shot_on_cannot_ask_more_than_one_step_allows() -> None:
    with pytest.raises(SettingsError, match="one step cannot ask for 1200 candidates"):
        plan_arms("one-shot", "off,on", BASE, total_candidates=1200)


def test_total_candidates_only_for_the_axes_that_use_it() -> None:
    with pytest.raises(SettingsError, match="applies to the per-step and one-shot axes"):
        plan_arms("order", "ascending", BASE, total_candidates=24)


def test_a_temperature_schedule_and_the_temperature_axis_do_not_mix() -> None:
    scheduled = OptimizeConfig(temperature_end=2.0)
    with pytest.raises(SettingsError, match="drop --temperature-end"):
        plan_arms("temperature", "0.5,1", scheduled)


@pytest.mark.parametrize(
    ("axis", "values", "expected"),
    [
        ("order", "ascending,descending,random", [
            MetaPromptConfig(order="ascending"), MetaPromptConfig(order="descending"),
            MetaPromptConfig(order="random")]),
        ("buckets", "none,20,100", [
            MetaPromptConfig(score_buckets=None), MetaPromptConfig(score_buckets=20),
            MetaPromptConfig(score_buckets=100)]),
        ("exemplars", "0,3,10", [
            MetaPromptConfig(exemplars=0), MetaPromptConfig(exemplars=3),
            MetaPromptConfig(exemplars=10)]),
    ],
)  # fmt: skip
def test_meta_prompt_axes_set_the_meta_prompt_option(
    axis: str, values: str, expected: list[MetaPromptConfig]
) -> None:
    arms = plan_arms(axis, values, BASE)
    assert [a.config.meta for a in arms] == expected
    # Nothing else changes.
    assert all(a.config == replace(BASE, meta=a.config.meta) for a in arms)
    labels = values.split(",")
    assert [a.name for a in arms] == [f"{axis}={v}/rep0" for v in labels]
    assert [a.dir for a in arms] == [f"arms/{axis}={v}/rep0" for v in labels]


def test_strategy_sets_the_search_strategy_and_nothing_else() -> None:
    arms = plan_arms("strategy", "opro,evoprompt-ga,evoprompt-de", BASE, repeats=2)
    assert [(a.config.strategy, a.repeat) for a in arms] == [
        ("opro", 0), ("opro", 1), ("evoprompt-ga", 0), ("evoprompt-ga", 1),
        ("evoprompt-de", 0), ("evoprompt-de", 1),
    ]  # fmt: skip
    assert all(
        a.config == replace(BASE, strategy=a.config.strategy, seed=a.config.seed) for a in arms
    )
    assert [a.config.seed - BASE.seed for a in arms] == [0, 1] * 3


def test_temperature_sets_the_optimizer_temperature() -> None:
    arms = plan_arms("temperature", "0,0.5,2", BASE)
    assert [a.config.temperature for a in arms] == [0.0, 0.5, 2.0]
    assert [a.label for a in arms] == ["0", "0.5", "2"]


def test_per_step_arms_ask_for_the_same_total() -> None:
    arms = plan_arms("per-step", "1,2,4,8,16", BASE, total_candidates=160)
    shapes = [(a.config.steps, a.config.candidates_per_step) for a in arms]
    assert shapes == [(160, 1), (80, 2), (40, 4), (20, 8), (10, 16)]
    assert {s * c for s, c in shapes} == {160}
    # Without --total-candidates the total is the base run's: 6 steps x 4 candidates.
    default = plan_arms("per-step", "1,2,8", BASE)
    assert [(a.config.steps * a.config.candidates_per_step) for a in default] == [24, 24, 24]


def test_one_shot_asks_for_everything_in_one_step_and_off_iterates_to_the_same_total() -> None:
    off, on = plan_arms("one-shot", "off,on", BASE, total_candidates=48)
    assert (off.config.steps, off.config.candidates_per_step) == (12, 4)
    assert (on.config.steps, on.config.candidates_per_step) == (1, 48)
    with pytest.raises(SettingsError, match="4 does not divide the total of 50"):
        plan_arms("one-shot", "off,on", BASE, total_candidates=50)


def test_start_values_are_instruction_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("Let's think step by step.\n\n  \nBe careful.\n")
    empty = tmp_path / "empty one.txt"
    empty.write_text("\n\n")
    with pytest.raises(SettingsError, match="value plain is given twice"):
        plan_arms("start", f"{plain},{plain}", BASE)
    with pytest.raises(SettingsError, match="has no instructions"):
        plan_arms("start", str(empty), BASE)
    other = tmp_path / "other.md"
    other.write_text("Answer briefly.\n")
    arms = plan_arms("start", [plain, other], BASE)
    assert [a.label for a in arms] == ["plain", "other"]
    assert arms[0].starting == ("Let's think step by step.", "Be careful.")
    assert arms[1].starting == ("Answer briefly.",)
    assert all(a.config == BASE for a in arms)


def test_repeats_use_consecutive_seeds_and_their_own_sampling_seed() -> None:
    arms = plan_arms("exemplars", "0,3", BASE, repeats=3)
    assert [(a.label, a.repeat, a.config.seed, a.optimizer_seed) for a in arms] == [
        ("0", 0, 7, None), ("0", 1, 8, 8), ("0", 2, 9, 9),
        ("3", 0, 7, None), ("3", 1, 8, 8), ("3", 2, 9, 9),
    ]  # fmt: skip
    assert len({a.dir for a in arms}) == 6


def test_values_from_python_are_spelled_as_on_the_command_line() -> None:
    arms = plan_arms("buckets", [None, 20], BASE)
    assert [a.config.meta.score_buckets for a in arms] == [None, 20]
    off, on = plan_arms("one-shot", [False, True], BASE)
    assert on.config.steps == 1 and off.config.steps == 6
