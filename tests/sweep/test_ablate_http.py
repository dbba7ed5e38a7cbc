"""Ablations over real HTTP against the fake OpenAI server: what sharing saved is counted
exactly (requests served from results another arm of the ablation paid, never results cached
before it), the budget holds across arms and a resume re-pays nothing, per-step arms ask for
the same total, and repeats run with their own seeds.

This file is also the server for the CLI tests (`python <this file>`): its responder plays
both models. Meta-prompts get bracketed instructions that depend on how many earlier
instructions the meta-prompt lists and on whether it shows task examples; scorer prompts
("[tag] Is N even?") are answered right or wrong depending on the instruction's words.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.evaluate import ErrorPolicy
from opro.engine.retry import RetryPolicy
from opro.optimize.loop import OptimizeConfig
from opro.sweep import ModelSettings, ProblemSettings, SweepSettings
from opro.sweep.ablate_run import AblationResult, ablate
from opro.sweep.state import SweepError
from opro.testing.fake_openai import (
    FakeOpenAIServer,
    FakeServerConfig,
    json_response,
    serve_until_signalled,
)

POOL = [
    "Use parity rules.",
    "Think carefully.",
    "Look at the last figure.",
    "Check the parity of the number.",
    "Answer yes or no.",
    "Be brief.",
    "Count in pairs.",
    "Recall what even means.",
]
META_MARK = "Write the text in square brackets."


def answer(prompt: str) -> str:
    """The fake models: an optimizer for meta-prompts, a parity scorer for the rest."""
    if META_MARK in prompt:
        k = 2 * prompt.count("text:\n") + (3 if "input:\n" in prompt else 0)
        return f"[{POOL[k % len(POOL)]}] [{POOL[(k + 1) % len(POOL)]}]"
    marker = prompt.find("Is ")
    if marker < 0:
        return "I do not know."
    n = int(prompt[marker + 3 :].split(" ", 1)[0])
    right = "Yes" if n % 2 == 0 else "No"
    if "parity" in prompt or ("carefully" in prompt and n % 3):
        return f"The answer is {right}."
    return "The answer is Yes."


async def serve() -> int:
    """Entry point of the server subprocess; prints READY <base_url> like fake_openai."""
    return await serve_until_signalled(FakeOpenAIServer(FakeServerConfig(responder=answer)))


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))


# -- tests ---------------------------------------------------------------------------------


def write_task(path: Path, n: int = 24) -> str:
    rows = [
        {"input": f"[p] Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def base(task: str, base_url: str, **options: Any) -> SweepSettings:
    role = ModelSettings("openai/fake-model", base_url=base_url, max_tokens=16)
    return SweepSettings(
        patterns=(task,),
        scorer=role,
        optimizer=role,
        optimize=OptimizeConfig(steps=2, candidates_per_step=2, test_top=1, **options),
        problem=ProblemSettings(train_fraction=0.5, test_limit=4),
        max_parallel_tasks=2,
    )


async def run(
    tmp_path: Path,
    settings: SweepSettings,
    name: str,
    cache: str,
    *args: Any,
    budget: Budget | None = None,
    **kw: Any,
) -> AblationResult:
    retry = RetryPolicy(base_delay=0.001, max_delay=0.01)
    async with Engine(cache_dir=tmp_path / cache, budget=budget or Budget(), retry=retry) as e:
        return await ablate(e, settings, *args, run_dir=tmp_path / name, **kw)


def served_once(server: FakeOpenAIServer) -> bool:
    """Every scorer prompt paid once; a meta-prompt at most once per repeat (the repeats
    sample it with their own seeds, so the server sees the same text again)."""
    counts = server.prompt_counts
    scorer = [n for p, n in counts.items() if META_MARK not in p]
    optimizer = [n for p, n in counts.items() if META_MARK in p]
    return max(scorer, default=0) <= 1 and max(optimizer, default=0) <= 2


def arm_results(result: AblationResult) -> list[dict[str, Any]]:
    return [
        json.loads((result.directory / a.dir / "results.json").read_text()) for a in result.arms
    ]


def billed(server: FakeOpenAIServer) -> int:
    return server.billed_prompt_tokens + server.billed_completion_tokens


async def test_sharing_is_counted_exactly_and_results_cached_before_do_not_count(
    tmp_path: Path,
) -> None:
    task = write_task(tmp_path / "parity.jsonl")
    async with FakeOpenAIServer(FakeServerConfig(responder=answer)) as server:
        settings = base(task, server.base_url)
        result = await run(tmp_path, settings, "first", "cache", "exemplars", "0,3", repeats=2)
        assert result.complete, [(o.task, o.reason) for o in result.outcomes]
        assert served_once(server)  # every prompt paid once, whichever arm asked first
        runs = arm_results(result)
        paid = sum(r["totals"]["calls"] for r in runs)
        served = sum(r["totals"]["cache_hits"] for r in runs)
        assert paid == server.requests_total
        # The cache was empty: every request answered without a call was paid by another arm.
        assert result.saved["scorer"] + result.saved["optimizer"] == served
        # All four arms score the step-0 instruction on the 12 training examples: one pays.
        assert result.saved["scorer"] >= 3 * 12
        # Each arm's own count adds up to the total, in sharing.json and the comparison.
        sharing = json.loads((result.directory / "sharing.json").read_text())
        per_arm = [sum(v.values()) for v in sharing["saved"].values()]
        assert sum(per_arm) == served and len(per_arm) == 4
        summary = json.loads((result.directory / "results.json").read_text())
        assert summary["sharing"]["saved"] == served

        # The same ablation again on the warm cache: nothing is paid and nothing was saved
        # by sharing (every result was paid before this ablation started).
        server.reset_stats()
        again = await run(tmp_path, settings, "again", "cache", "exemplars", "0,3", repeats=2)
        assert again.complete and server.requests_total == 0
        assert again.saved == {"scorer": 0, "optimizer": 0}
        assert sum(r["totals"]["cache_hits"] for r in arm_results(again)) == paid + served


async def test_repeats_run_with_their_own_seeds(tmp_path: Path) -> None:
    task = write_task(tmp_path / "parity.jsonl")
    async with FakeOpenAIServer(FakeServerConfig(responder=answer)) as server:
        settings = base(task, server.base_url, seed=5)
        result = await run(tmp_path, settings, "abl", "cache", "exemplars", "0", repeats=3)
    assert result.complete
    seeds = []
    for arm in result.arms:
        run_config = json.loads((result.directory / arm.dir / "config.json").read_text())["run"]
        seeds.append((run_config["options"]["seed"], run_config["optimizer"]["seed"]))
    assert seeds == [(5, None), (6, 6), (7, 7)]


async def test_per_step_arms_ask_for_the_same_total(tmp_path: Path) -> None:
    task = write_task(tmp_path / "parity.jsonl")
    async with FakeOpenAIServer(FakeServerConfig(responder=answer)) as server:
        settings = base(task, server.base_url)
        result = await run(
            tmp_path, settings, "abl", "cache", "per-step", "1,2,4", total_candidates=4
        )
    assert result.complete
    for arm in result.arms:
        lines = (result.directory / arm.dir / "steps.jsonl").read_text().splitlines()
        steps = [json.loads(line) for line in lines]
        asked = [len(s["answers"]) for s in steps if s["kind"] == "optimize"]
        assert sum(asked) == 4 and len(asked) == 4 // arm.config.candidates_per_step


async def test_the_budget_holds_across_arms_and_a_resume_pays_nothing_twice(
    tmp_path: Path,
) -> None:
    task = write_task(tmp_path / "parity.jsonl")
    async with FakeOpenAIServer(FakeServerConfig(responder=answer)) as server:
        settings = base(task, server.base_url)
        plan = ("exemplars", "0,3")
        whole = await run(tmp_path, settings, "whole", "whole-cache", *plan, repeats=2)
        assert whole.complete
        total = billed(server)
        asked = dict(server.prompt_counts)
        server.reset_stats()

        cap = total // 2
        capped = (tmp_path, settings, "capped", "capped-cache")
        stopped = await run(*capped, *plan, repeats=2, budget=Budget(max_tokens=cap))
        assert stopped.stopped == "budget" and not stopped.complete
        assert billed(server) <= cap  # the promise, over every arm
        record = json.loads((tmp_path / "capped" / "sweep.json").read_text())
        assert "stopped" in {t["status"] for t in record["tasks"]}
        assert record["totals"]["tokens_in"] + record["totals"]["tokens_out"] == billed(server)
        saved_before = sum(stopped.saved.values())

        with pytest.raises(SweepError, match=r"ablation\.values was"):
            await run(*capped, "exemplars", "0,5", repeats=2, resume=True)
        # Resumed with only the directory: axis, values and repeats are the stored ones.
        more = await run(*capped, budget=Budget(max_tokens=2 * total), resume=True)
        assert more.complete and more.stopped is None
        assert dict(server.prompt_counts) == asked  # both sessions asked what one run did
        assert billed(server) <= 2 * total
        record = json.loads((tmp_path / "capped" / "sweep.json").read_text())
        assert record["totals"]["tokens_in"] + record["totals"]["tokens_out"] == billed(server)
        assert sum(more.saved.values()) >= saved_before  # carried over from the first session
    for once, resumed in zip(arm_results(whole), arm_results(more), strict=True):
        assert resumed["best"] == once["best"] and resumed["final"] == once["final"]


class PoisonServer(FakeOpenAIServer):
    """Refuses (400) every request that mentions poison."""

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if b"poison" in await request.read():
            error = {"message": "refused", "type": "invalid_request_error", "code": None}
            return self._fail("poison", json_response(400, {"error": error}))
        return await super()._complete(request, chat)


async def test_start_arms_begin_from_their_files_and_a_failing_arm_fails_alone(
    tmp_path: Path,
) -> None:
    task = write_task(tmp_path / "parity.jsonl")
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("Think carefully.\nBe brief.\n")
    bad.write_text("Mind the poison.\n")
    async with PoisonServer(FakeServerConfig(responder=answer)) as server:
        settings = base(task, server.base_url)
        problem = ProblemSettings(
            train_fraction=0.5, test_limit=4, errors=ErrorPolicy(max_errors=3)
        )
        settings = replace(settings, problem=problem)
        result = await run(tmp_path, settings, "abl", "cache", "start", f"{good},{bad}")
    status = {o.task: (o.status, o.reason or "") for o in result.outcomes}
    assert status["start=good/rep0"] == ("done", "")
    assert status["start=bad/rep0"][0] == "failed" and "--max-errors" in status["start=bad/rep0"][1]
    steps = (result.directory / "arms/start=good/rep0/steps.jsonl").read_text().splitlines()
    started = [c["text"] for c in json.loads(steps[0])["candidates"]]
    assert started == ["Think carefully.", "Be brief."]
    summary = json.loads((result.directory / "results.json").read_text())
    assert [(a["arm"], a["status"]) for a in summary["arms"]] == [
        ("start=good/rep0", "done"),
        ("start=bad/rep0", "failed"),
    ]
