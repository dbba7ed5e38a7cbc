"""`--batch` beyond one evaluation: an evaluate-only sweep sends one batch over every task's
pairs; `opro optimize --batch` scores each step in a batch of its own while the optimizer
stays live. Real HTTP against the loopback batch fake."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from opro.engine.batch import BatchSettings
from opro.engine.engine import Engine
from opro.engine.model import Price
from opro.sweep import ModelSettings, ProblemSettings, SweepSettings, sweep
from opro.sweep.settings import EvaluateOnly
from opro.testing.fake_openai_batch import FakeOpenAIBatchServer

PRICE = Price(1.0, 2.0)
TASKS = ("synthetic/boolean_expressions", "synthetic/arithmetic")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIBatchServer]:
    async with FakeOpenAIBatchServer() as srv:
        yield srv


def prompts_of(fake: FakeOpenAIBatchServer) -> set[str]:
    return {
        m["content"]
        for batch in fake.batches.values()
        for line in batch.lines
        for m in line["body"]["messages"]
    }


async def test_evaluate_only_sweep_sends_one_batch(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    settings = SweepSettings(
        patterns=TASKS,
        scorer=ModelSettings("openai/fake-model", base_url=fake.base_url, price=PRICE),
        evaluate=EvaluateOnly(("Answer.", "Think, then answer."), split="test"),
        problem=ProblemSettings(test_limit=6),
        batch=BatchSettings(poll_first_s=0.0, poll_max_s=0.0),
    )
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        result = await sweep(engine, settings, run_dir=tmp_path / "sweep")
    assert result.complete, [(t.task, t.reason) for t in result.tasks]
    assert fake.creates == 1 and fake.requests_total == 0
    [batch] = fake.batches.values()
    assert len(batch.lines) == 2 * 2 * 6  # tasks x instructions x examples, one batch
    t = result.totals
    assert (t.tokens_in, t.tokens_out) == (
        fake.batch_billed_prompt_tokens,
        fake.batch_billed_completion_tokens,
    )
    billed = (t.tokens_in * PRICE.input_per_m + t.tokens_out * PRICE.output_per_m) / 2e6
    assert t.cost_usd == pytest.approx(billed)
    assert (tmp_path / "sweep" / "batches.json").exists()


async def test_optimize_scores_each_step_in_a_batch(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    url = fake.base_url
    argv = [
        sys.executable, "-m", "opro.cli.main", "optimize",
        "--task", "synthetic/boolean_expressions", "--train-fraction", "0.1", "--test-limit", "4",
        "--scorer", "openai/fake-model", "--scorer-base-url", url,
        "--optimizer", "openai/fake-model", "--optimizer-base-url", url,
        "--price", "1,2", "--optimizer-price", "1,2",
        "--steps", "2", "--candidates-per-step", "2",
        "--batch", "--batch-poll-max", "0.01",
        "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert fake.creates >= 2  # the starting instruction's step, then later scorings
    batched = prompts_of(fake)
    live = set(fake.prompt_counts)
    assert live and not (live & batched)  # the optimizer live, no scorer prompt sent live
    state = orjson.loads((tmp_path / "run" / "batches.json").read_bytes())
    assert {b["status"] for b in state["batches"]} == {"collected"}
    assert len(state["batches"]) == fake.creates
