"""Ablations: which arms an `opro ablate AXIS --values ...` runs, each a setting of one axis.

Data enters as an axis name, the values as the user typed them, a repeat count and the base
`OptimizeConfig` (the options of `opro optimize`); it leaves as a list of `Arm`s, each an
ordinary optimize run: its own config, starting instructions and optimizer sampling seed, and
its directory `arms/<axis>=<label>/rep<r>` under the ablation directory. Every value is
checked here, per axis, before anything is paid for (one-line `SettingsError`s naming the
axis and what it allows).

Axes, and the setting each one overrides (the paper's section 5.3 and appendix):

- `order`: `MetaPromptConfig.order` (ascending / descending / random);
- `buckets`: `MetaPromptConfig.score_buckets` (none / 20 / 100 ...);
- `exemplars`: `MetaPromptConfig.exemplars` (0 / 3 / 10 ...);
- `per-step`: `candidates_per_step` at a fixed total of candidates asked for: steps =
  total // per_step (`total_candidates`, default the base steps x candidates per step; a
  value that does not divide the total is refused, so every arm asks for the same number);
- `start`: the starting instructions; each value is a file, one instruction per line (blank
  lines are skipped), labelled by the file's name without its suffix;
- `temperature`: the optimizer temperature (`OptimizeConfig.temperature`);
- `strategy`: `OptimizeConfig.strategy`, validated against `opro.optimize.strategies`;
- `one-shot`: the paper's one-step baseline (`off` / `on`): `on` asks for all the candidates
  in a single step (steps = 1, candidates per step = the total), so its meta-prompt shows only
  the starting instructions with their scores and the exemplars; `off` is the iterative arm
  with the same total (steps = total // candidates per step).

Repeat r of every arm uses the run seed `seed + r` (exemplar draws, random order) and, for
r >= 1, the optimizer sampling seed `seed + r` too (sent with the request and part of its
cache key), so repeats are independent draws even where the meta-prompt does not depend on
the seed; repeat 0 is exactly `opro optimize --seed seed`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from opro.checks import CANDIDATES, SEED, TEMPERATURE, IntRange
from opro.errors import SettingsError
from opro.optimize.loop import OptimizeConfig
from opro.optimize.metaprompt import BUCKETS, EXEMPLARS, ORDERS
from opro.optimize.strategies import STRATEGIES

AXES: tuple[str, ...] = (
    "order",
    "buckets",
    "exemplars",
    "per-step",
    "start",
    "temperature",
    "strategy",
    "one-shot",
)
REPEATS = IntRange(1, 1_000)
TOTAL = IntRange(1, 10**9)
ARMS_DIR = "arms"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True, slots=True)
class Value:
    """One value of the axis: `label` names it in directories and tables, `value` is what
    the setting gets (an instruction list for `start`)."""

    label: str
    value: Any


@dataclass(frozen=True, slots=True)
class Arm:
    """One optimize run of the ablation."""

    axis: str
    label: str
    repeat: int
    config: OptimizeConfig
    starting: tuple[str, ...] | None = None  # None: the problem's own
    optimizer_seed: int | None = None  # the optimizer's sampling seed (None: the model's)

    @property
    def value_name(self) -> str:
        return f"{self.axis}={self.label}"

    @property
    def name(self) -> str:
        """The arm as sweep.json, progress lines and the tables name it."""
        return f"{self.value_name}/rep{self.repeat}"

    @property
    def dir(self) -> str:
        return f"{ARMS_DIR}/{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dir": self.dir,
            "label": self.label,
            "repeat": self.repeat,
            "seed": self.config.seed,
            "optimizer_seed": self.optimizer_seed,
            "steps": self.config.steps,
            "candidates_per_step": self.config.candidates_per_step,
            "starting": list(self.starting) if self.starting is not None else None,
        }


def _bad(axis: str, text: str, allowed: str) -> SettingsError:
    return SettingsError(f"ablation axis {axis}: bad value {text[:40]!r}; allowed: {allowed}")


def _int_value(axis: str, text: str, limits: IntRange) -> Value:
    try:
        number = limits(text)
    except argparse.ArgumentTypeError:
        raise _bad(axis, text, limits.describe()) from None
    return Value(str(number), number)


def _order(text: str) -> Value:
    if text not in ORDERS:
        raise _bad("order", text, ", ".join(ORDERS))
    return Value(text, text)


def _buckets(text: str) -> Value:
    if text.lower() == "none":
        return Value("none", None)
    try:
        number = BUCKETS(text)
    except argparse.ArgumentTypeError:
        raise _bad("buckets", text, f"none or {BUCKETS.describe()}") from None
    return Value(str(number), number)


def _temperature(text: str) -> Value:
    try:
        number = TEMPERATURE(text)
    except argparse.ArgumentTypeError:
        raise _bad("temperature", text, TEMPERATURE.describe()) from None
    return Value(f"{number:g}", number)


def _one_shot(text: str) -> Value:
    if text.lower() not in ("on", "off"):
        raise _bad("one-shot", text, "off, on")
    return Value(text.lower(), text.lower() == "on")


def _strategy(text: str) -> Value:
    if text not in STRATEGIES:
        raise _bad("strategy", text, ", ".join(STRATEGIES))
    return Value(text, text)


def _start(text: str) -> Value:
    path = Path(text)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(f"ablation axis start: cannot read {text}: {reason}") from None
    found = tuple(line for line in lines if line.strip())
    if not found:
        raise SettingsError(
            f"ablation axis start: {text} has no instructions (one per line, blank lines skipped)"
        )
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "-", path.stem).strip("-.") or "start"
    return Value(label, found)


_PARSERS: dict[str, Callable[[str], Value]] = {
    "order": _order,
    "buckets": _buckets,
    "exemplars": lambda t: _int_value("exemplars", t, EXEMPLARS),
    "per-step": lambda t: _int_value("per-step", t, CANDIDATES),
    "start": _start,
    "temperature": _temperature,
    "strategy": _strategy,
    "one-shot": _one_shot,
}


def value_text(value: object) -> str:
    """A value given in Python as the command line would spell it (None: none, bools on/off)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise SettingsError(f"unknown ablation axis {axis!r}; use one of {', '.join(AXES)}")
    return axis


def parse_values(axis: str, values: str | Sequence[object]) -> list[Value]:
    """The axis's values, checked: a comma-separated string (as `--values`) or a sequence."""
    check_axis(axis)
    texts = values.split(",") if isinstance(values, str) else [value_text(v) for v in values]
    texts = [t.strip() for t in texts]
    if not texts or any(not t for t in texts):
        raise SettingsError(f"ablation axis {axis}: give its values separated by commas")
    parsed = [_PARSERS[axis](t) for t in texts]
    labels = [v.label for v in parsed]
    for label in labels:
        if labels.count(label) > 1:
            raise SettingsError(f"ablation axis {axis}: value {label} is given twice")
        if not _LABEL.match(label):
            raise SettingsError(f"ablation axis {axis}: value {label!r} cannot name a directory")
    return parsed


def default_total(base: OptimizeConfig) -> int:
    """The candidates the base run asks for: steps x candidates per step."""
    return base.steps * base.candidates_per_step


def _per_step(base: OptimizeConfig, per_step: int, total: int) -> OptimizeConfig:
    if total % per_step:
        raise SettingsError(
            f"ablation axis per-step: {per_step} does not divide the total of {total} "
            "candidates; give values that divide --total-candidates"
        )
    return replace(base, steps=total // per_step, candidates_per_step=per_step)


def _one_shot_config(base: OptimizeConfig, on: bool, total: int) -> OptimizeConfig:
    if on:
        if total > CANDIDATES.high:
            raise SettingsError(
                f"ablation axis one-shot: one step cannot ask for {total} candidates "
                f"(at most {CANDIDATES.high}); lower --total-candidates or --steps"
            )
        return replace(base, steps=1, candidates_per_step=total)
    return _per_step(base, base.candidates_per_step, total)


def arm_config(axis: str, value: Any, base: OptimizeConfig, total: int) -> OptimizeConfig:
    """`base` with the axis set to `value` (`start` changes the problem, not the config)."""
    if axis == "order":
        return replace(base, meta=replace(base.meta, order=value))
    if axis == "buckets":
        return replace(base, meta=replace(base.meta, score_buckets=value))
    if axis == "exemplars":
        return replace(base, meta=replace(base.meta, exemplars=value))
    if axis == "per-step":
        return _per_step(base, value, total)
    if axis == "temperature":
        return replace(base, temperature=value)
    if axis == "strategy":
        return replace(base, strategy=str(value))
    if axis == "one-shot":
        return _one_shot_config(base, value, total)
    return base  # start


def plan_arms(
    axis: str,
    values: str | Sequence[object],
    base: OptimizeConfig,
    *,
    repeats: int = 1,
    total_candidates: int | None = None,
) -> list[Arm]:
    """Every (value, repeat) arm, values in the order given, repeats in order. `values` may
    also be already parsed `Value`s (a resumed ablation's stored ones)."""
    check_axis(axis)
    if isinstance(values, list | tuple) and values and all(isinstance(v, Value) for v in values):
        parsed = [v for v in values if isinstance(v, Value)]
    else:
        parsed = parse_values(axis, values)
    REPEATS.check("repeats", repeats)
    if total_candidates is not None:
        TOTAL.check("total candidates", total_candidates)
        if axis not in ("per-step", "one-shot"):
            raise SettingsError(
                f"--total-candidates applies to the per-step and one-shot axes, not {axis}"
            )
    if axis == "temperature" and base.temperature_end is not None:
        raise SettingsError(
            "ablation axis temperature sets the optimizer temperature; drop --temperature-end"
        )
    SEED.check("seed", base.seed + repeats - 1)
    total = total_candidates if total_candidates is not None else default_total(base)
    arms = []
    for v in parsed:
        config = arm_config(axis, v.value, base, total)
        starting = v.value if axis == "start" else None
        for r in range(repeats):
            seed = base.seed + r
            arms.append(
                Arm(
                    axis,
                    v.label,
                    r,
                    replace(config, seed=seed),
                    starting=starting,
                    optimizer_seed=seed if r else None,
                )
            )
    return arms


def describe_plan(
    axis: str, arms: Sequence[Arm], repeats: int, total_candidates: int | None
) -> dict[str, Any]:
    """What ablation.json holds about the plan (and sweep.json's settings, for resume)."""
    labels = list(dict.fromkeys(a.label for a in arms))
    return {
        "axis": axis,
        "values": labels,
        "repeats": repeats,
        "total_candidates": total_candidates,
        "arms": [a.describe() for a in arms],
    }
