"""opro-engine: an async, cached, rate-limited evaluation engine for OPRO prompt optimization.

The public API is what this module exports (pinned by tests/test_public_api.py). Build an
`Engine`, get scorer `Model`s from it by `provider/model` name, and `await
engine.evaluate(instructions, examples, scorer)`; or call `await opro.evaluate(...)` for a
one-off evaluation with a temporary engine. `await opro.sweep(engine, SweepSettings(...),
run_dir=...)` runs OPRO (or an evaluation) on many tasks under one engine, and `await
opro.ablate(engine, SweepSettings(...), "exemplars", "0,3", repeats=3, run_dir=...)` one OPRO
run per value of an ablation axis, compared in one report. (`opro.sweep` is
that function; its module's names import as `from opro.sweep import ...`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opro.engine.engine import Engine, TaskGrader
from opro.engine.evaluate import (
    EvalReport,
    EvaluationAborted,
    Grader,
    InstructionScore,
    Progress,
    Totals,
)
from opro.engine.limits import LimitConfig
from opro.engine.model import Decoding, Generation, Model, ModelCallError, Price
from opro.engine.retry import RetryPolicy
from opro.errors import OproError, SettingsError
from opro.optimize.loop import OptimizationResult, OptimizeConfig, optimize
from opro.optimize.metaprompt import MetaPromptConfig
from opro.optimize.problem import Problem, PromptProblem, SolutionScore
from opro.optimize.protocol import ProtocolPreset, protocol_preset
from opro.providers.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    FatalError,
    ProviderError,
    RateLimitError,
    TransientError,
)
from opro.providers.types import Completion, Message, Request, Usage
from opro.sweep.ablate_run import AblationResult, ablate
from opro.sweep.run import SweepResult, sweep
from opro.sweep.settings import EvaluateOnly, ModelSettings, ProblemSettings, SweepSettings
from opro.tasks.types import Example

__all__ = [
    "AblationResult",
    "AuthenticationError",
    "BadRequestError",
    "Completion",
    "ConfigurationError",
    "Decoding",
    "Engine",
    "EvalReport",
    "EvaluateOnly",
    "EvaluationAborted",
    "Example",
    "FatalError",
    "Generation",
    "Grader",
    "InstructionScore",
    "LimitConfig",
    "Message",
    "MetaPromptConfig",
    "Model",
    "ModelCallError",
    "ModelSettings",
    "OproError",
    "OptimizationResult",
    "OptimizeConfig",
    "Price",
    "Problem",
    "ProblemSettings",
    "Progress",
    "PromptProblem",
    "ProtocolPreset",
    "ProviderError",
    "RateLimitError",
    "Request",
    "RetryPolicy",
    "SettingsError",
    "SolutionScore",
    "SweepResult",
    "SweepSettings",
    "TaskGrader",
    "Totals",
    "TransientError",
    "Usage",
    "ablate",
    "evaluate",
    "optimize",
    "protocol_preset",
    "sweep",
]


async def evaluate(
    instructions: Sequence[str],
    examples: Sequence[Example],
    scorer: str,
    *,
    cache_dir: str | None = None,
    use_cache: bool = True,
    retry: RetryPolicy | None = None,
    grader: Grader | None = None,
    position: Any = "Q_begin",
    limits: LimitConfig | None = None,
    decoding: Decoding | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    price: Price | None = None,
    **provider_options: Any,
) -> EvalReport:
    """One evaluation with a temporary `Engine`; the scorer's settings are those of
    `Engine.model()` (`provider_options` such as `api` go to its provider)."""
    async with Engine(cache_dir=cache_dir, use_cache=use_cache, retry=retry) as engine:
        model = engine.model(
            scorer,
            limits=limits,
            decoding=decoding,
            base_url=base_url,
            api_key=api_key,
            price=price,
            **provider_options,
        )
        return await engine.evaluate(
            instructions, examples, model, grader=grader, position=position
        )
