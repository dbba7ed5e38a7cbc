"""What a sweep runs with: the models, the per-task problem options and the evaluate-only mode.

These frozen records are the sweep's settings as given; `describe` turns them into the JSON
stored in `sweep.json` (base URLs redacted, never a key: keys come from the environment and
are not part of any record), and `resume_differences` says which stored setting a resumed
sweep would change. Operational settings (limits, budget, prices, base URLs, the error
policy, how many tasks run at once) may change on resume; everything that changes a result
may not, like `opro optimize --resume`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from opro.checks import FRACTION, MAX_TOKENS, SEED, TEMPERATURE, IntRange
from opro.engine.evaluate import ErrorPolicy
from opro.engine.limits import DEFAULT_MAX_CONCURRENCY, LimitConfig
from opro.engine.model import Price
from opro.errors import SettingsError
from opro.optimize.loop import OptimizeConfig, option_defaults
from opro.optimize.protocol import PROTOCOLS
from opro.optimize.runlog import config_differences
from opro.providers.urls import redact_url
from opro.tasks.grading import GRADINGS, Grading
from opro.tasks.prompts import POSITIONS, Position

Mode = Literal["optimize", "evaluate"]
SplitChoice = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")
PARALLEL_TASKS = IntRange(1, 10_000)
TEST_LIMIT = IntRange(1, 10**9)


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """How the sweep builds one role's model (scorer or optimizer) through `Engine.model`.

    `max_tokens` None means the role's default: for the scorer the task's own (1024 on the
    paper's tasks, else 256), for the optimizer 512. Limits apply to the connection and
    must agree between roles that share one (the engine refuses otherwise).
    """

    spec: str
    base_url: str | None = None
    api: str | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    price: Price | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or "/" not in self.spec:
            raise SettingsError(f"a model is named provider/model, got {self.spec!r}")
        if self.max_tokens is not None:
            MAX_TOKENS.check("max tokens", self.max_tokens)
        TEMPERATURE.check("temperature", self.temperature)
        LimitConfig(self.max_concurrency, self.rpm, self.tpm)  # checks the numbers

    def describe(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["stop"] = list(self.stop)
        shown["base_url"] = redact_url(self.base_url) if self.base_url else None
        return shown


@dataclass(frozen=True, slots=True)
class ProblemSettings:
    """The per-task options of `PromptProblem` (and, in evaluate-only mode, of the split)."""

    train_fraction: float | None = None
    validation_fraction: float = 0.0
    split_seed: int = 0
    position: Position = "Q_begin"
    qa_framing: bool | None = None
    starting: tuple[str, ...] | None = None
    test_limit: int | None = None
    errors: ErrorPolicy = field(default_factory=ErrorPolicy)

    def __post_init__(self) -> None:
        if self.train_fraction is not None:
            FRACTION.check("train fraction", self.train_fraction)
        FRACTION.check("validation fraction", self.validation_fraction)
        SEED.check("split seed", self.split_seed)
        if self.position not in POSITIONS:
            raise SettingsError(f"position must be one of {', '.join(POSITIONS)}")
        if self.test_limit is not None:
            TEST_LIMIT.check("test limit", self.test_limit)


@dataclass(frozen=True, slots=True)
class EvaluateOnly:
    """The evaluate-only mode: score `instructions` on each task's `split` (no optimizer)."""

    instructions: tuple[str, ...]
    split: SplitChoice = "test"
    grading: Grading = "strict"
    protocol: str = "ours"

    def __post_init__(self) -> None:
        if not self.instructions:
            raise SettingsError("evaluate-only needs at least one instruction")
        if self.split not in SPLITS:
            raise SettingsError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.grading not in GRADINGS:
            raise SettingsError(f"grading must be one of {', '.join(GRADINGS)}")
        if self.protocol not in PROTOCOLS:
            raise SettingsError(f"protocol must be one of {', '.join(PROTOCOLS)}")


@dataclass(frozen=True, slots=True)
class SweepSettings:
    """Everything a sweep runs with, as one record (stored in sweep.json as `settings`, with
    the engine's budget caps beside it). The budget belongs to the engine (`Budget`)."""

    patterns: tuple[str, ...]
    scorer: ModelSettings
    optimizer: ModelSettings | None = None
    optimize: OptimizeConfig | None = None
    problem: ProblemSettings = field(default_factory=ProblemSettings)
    evaluate: EvaluateOnly | None = None
    include_variants: bool = False
    data_dir: str | None = None
    max_parallel_tasks: int = 4

    def __post_init__(self) -> None:
        PARALLEL_TASKS.check("max parallel tasks", self.max_parallel_tasks)
        if self.evaluate is None and self.optimizer is None:
            raise SettingsError("an optimizing sweep needs an optimizer model")

    @property
    def mode(self) -> Mode:
        return "evaluate" if self.evaluate is not None else "optimize"

    def describe(self) -> dict[str, Any]:
        """The JSON of sweep.json's `settings`: resolved values, base URLs redacted."""
        described: dict[str, Any] = _roundtrip(
            {
                "mode": self.mode,
                "tasks": list(self.patterns),
                "include_variants": self.include_variants,
                "data_dir": self.data_dir,
                "scorer": self.scorer.describe(),
                "optimizer": self.optimizer.describe() if self.optimizer else None,
                "optimize": asdict(self.optimize or OptimizeConfig())
                if self.evaluate is None
                else None,
                "problem": asdict(self.problem),
                "evaluate": asdict(self.evaluate) if self.evaluate else None,
                "max_parallel_tasks": self.max_parallel_tasks,
            }
        )
        return described


# Settings that act on how a sweep runs, not on what it finds: they may change on resume.
_OPERATIONAL = (
    "max_parallel_tasks",
    "budget.",
    "data_dir",
    "problem.errors.",
    "optimize.test_top",
    "optimize.select_by",
)
_MODEL_OPERATIONAL = ("base_url", "price", "max_concurrency", "rpm", "tpm")


def _operational(key: str, stored: Mapping[str, Any]) -> bool:
    if any(key == p or (p.endswith(".") and key.startswith(p)) for p in _OPERATIONAL):
        return True
    role, _, rest = key.partition(".")
    if role in ("scorer", "optimizer") and rest.split(".")[0] in _MODEL_OPERATIONAL:
        return True
    # More steps extend each run, unless the temperature schedule depends on the count.
    optimize = stored.get("optimize") or {}
    return key == "optimize.steps" and optimize.get("temperature_end") is None


def resume_differences(
    stored: Mapping[str, Any], new: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(setting, stored value, new value) for each result-changing setting that differs.

    A sweep stored before an optimize option existed ran with its default (`--strategy`
    opro, say), so a missing key matches exactly that value.
    """
    added = {f"optimize.{k.removeprefix('options.')}": v for k, v in option_defaults().items()}
    return [
        diff
        for diff in config_differences(stored, _roundtrip(new), added=added)
        if not _operational(diff[0], stored)
    ]


# Changes allowed on resume that act on finished runs too: those are run again (from their
# logged steps and the cache, so nothing is paid twice) to extend them or redo the final table.
_REOPENING = ("optimize.steps", "optimize.test_top", "optimize.select_by")


def reopens_finished(stored: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a resume with `new` settings changes what finished optimize tasks report."""
    return any(d[0] in _REOPENING for d in config_differences(stored, _roundtrip(new)))


def _roundtrip(obj: Any) -> Any:
    """As it reads back from JSON (tuples become lists), so comparisons are like for like."""
    return orjson.loads(orjson.dumps(obj))
