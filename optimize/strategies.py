"""Search strategies of `optimize`: OPRO (the default) and EvoPrompt's GA and DE.

Every strategy runs on the same `Problem`, engine, run directory, step log, resume and
budget; they differ only in how a step turns the scored history into new candidates:

* ``opro``: one meta-prompt shows the best solutions with their scores and asks the
  optimizer for `candidates_per_step` new ones (`loop.py`);
* ``evoprompt-ga`` and ``evoprompt-de``: a population of `population` prompts evolves
  by the optimizer model's crossover and mutation (Guo et al. 2023, arXiv 2309.08532;
  `evoprompt.py`).

This module names the strategies and checks the settings that belong to them; it imports
nothing from the loop, so `OptimizeConfig` can validate with it.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

from opro.checks import IntRange
from opro.errors import SettingsError

StrategyName = Literal["opro", "evoprompt-ga", "evoprompt-de"]
STRATEGIES: tuple[str, ...] = get_args(StrategyName)
EVOLUTIONARY: frozenset[str] = frozenset({"evoprompt-ga", "evoprompt-de"})
# A population needs two members for a GA crossover; EvoPrompt used 10.
POPULATION = IntRange(2, 1_000)


def check_strategy(name: object) -> StrategyName:
    """`name` if it names a strategy, else a one-line `SettingsError`."""
    if not isinstance(name, str) or name not in STRATEGIES:
        raise SettingsError(f"unknown strategy {name!r}; use {', '.join(STRATEGIES)}")
    return cast(StrategyName, name)


def is_evolutionary(name: str) -> bool:
    """Whether `name` evolves a population (GA, DE) rather than running OPRO's steps."""
    return name in EVOLUTIONARY
