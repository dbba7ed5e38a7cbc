"""The loop tells a progress display when a step starts calling models (`on_phase`)."""

from __future__ import annotations

from pathlib import Path

from opro.engine.engine import Engine
from opro.engine.evaluate import Progress
from opro.optimize.loop import OptimizeConfig, StepInfo, StepPhase, optimize
from opro.optimize.problem import PromptProblem
from opro.tasks import load_task


async def test_phases_come_before_their_calls_and_steps_after_them(tmp_path: Path) -> None:
    events: list[tuple[str, int, str]] = []

    def on_progress(p: Progress) -> None:
        if not events or events[-1][0] != "pairs":
            events.append(("pairs", -1, ""))

    def on_phase(e: StepPhase) -> None:
        assert e.steps == 2
        events.append(("phase", e.step, e.phase))

    def on_step(info: StepInfo) -> None:
        events.append(("step", info.step, ""))

    task = load_task("synthetic/boolean_expressions", size=40)
    async with Engine(use_cache=False) as engine:
        scorer = engine.model("simulated/s")
        optimizer = engine.model("simulated/o", priority=0)
        problem = PromptProblem(
            engine, scorer, task, validation_fraction=0.2, on_progress=on_progress
        )
        cfg = OptimizeConfig(steps=2, candidates_per_step=2, eval_every=2, test_top=1)
        await optimize(problem, optimizer, cfg, on_step=on_step, on_phase=on_phase)
    phases = [(step, phase) for kind, step, phase in events if kind == "phase"]
    assert phases == [
        (0, "scoring"), (0, "validation"),
        (1, "optimizer"), (1, "scoring"),
        (2, "optimizer"), (2, "scoring"), (2, "validation"),
        (2, "final"),
    ]  # fmt: skip
    # Scoring and validation report pairs after their phase starts; each step ends last.
    assert events[:3] == [("phase", 0, "scoring"), ("pairs", -1, ""), ("phase", 0, "validation")]
    assert [e for e in events if e[0] == "step"] == [("step", 0, ""), ("step", 1, ""),
                                                     ("step", 2, "")]  # fmt: skip
    assert events.index(("step", 1, "")) > events.index(("phase", 1, "scoring"))
    assert events[-2:] == [("phase", 2, "final"), ("pairs", -1, "")]
