"""The public API is exactly what `opro.__all__` says, and every name in it exists."""

from __future__ import annotations

import opro

EXPECTED = {
    "AuthenticationError",
    "BadRequestError",
    "Completion",
    "ConfigurationError",
    "Decoding",
    "Engine",
    "EvalReport",
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
    "OptimizationResult",
    "OptimizeConfig",
    "OproError",
    "Price",
    "Problem",
    "Progress",
    "PromptProblem",
    "ProtocolPreset",
    "ProviderError",
    "RateLimitError",
    "Request",
    "RetryPolicy",
    "SettingsError",
    "SolutionScore",
    "TaskGrader",
    "Totals",
    "TransientError",
    "Usage",
    "evaluate",
    "optimize",
    "protocol_preset",
    # sweeps: many tasks under one engine
    "EvaluateOnly",
    "ModelSettings",
    "ProblemSettings",
    "SweepResult",
    "SweepSettings",
    "sweep",
    # ablations: one run per value of an axis, under one engine
    "AblationResult",
    "ablate",
}


def test_all_is_pinned() -> None:
    assert set(opro.__all__) == EXPECTED
    assert len(opro.__all__) == len(EXPECTED)


def test_every_exported_name_exists() -> None:
    for name in opro.__all__:
        assert getattr(opro, name) is not None


def test_sweep_is_the_coroutine_and_its_module_still_imports() -> None:
    import inspect

    from opro.sweep import SweepProgress, TaskStarted

    assert inspect.iscoroutinefunction(opro.sweep)
    assert SweepProgress.__module__ == "opro.sweep.events" and TaskStarted is not None


def test_error_tree() -> None:
    assert issubclass(opro.RateLimitError, opro.ProviderError)
    assert issubclass(opro.TransientError, opro.ProviderError)
    assert issubclass(opro.AuthenticationError, opro.FatalError)
    assert issubclass(opro.BadRequestError, opro.FatalError)
    assert issubclass(opro.ConfigurationError, opro.FatalError)
    assert opro.RateLimitError("x").retryable and not opro.FatalError("x").retryable
