"""Batch APIs of the real vendors: run only when their key is set (marker `live`).

By default each test creates a one-request batch, reads its state back and cancels it (the
wire format end to end, at no more than one request's batch price). With
`OPRO_LIVE_BATCH_WAIT=1` it instead waits for the batch to end (up to the vendor's 24 h
window) and checks the answer lands in the cache and is billed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import opro
from opro.engine.batch import BatchSettings
from opro.engine.batch_evaluate import evaluate_in_batches
from opro.engine.engine import Engine
from opro.providers.batch import batch_api

WAIT = os.environ.get("OPRO_LIVE_BATCH_WAIT", "") not in ("", "0")
CASES = [
    ("openai", "OPENAI_API_KEY", os.environ.get("OPRO_LIVE_OPENAI_MODEL", "gpt-4o-mini")),
    (
        "anthropic",
        "ANTHROPIC_API_KEY",
        os.environ.get("OPRO_LIVE_ANTHROPIC_MODEL", "claude-haiku-4-5"),
    ),
]


@pytest.mark.live
@pytest.mark.timeout(25 * 3600 if WAIT else 120)  # the vendors' window is 24 h
@pytest.mark.parametrize(("vendor", "env", "model"), CASES)
async def test_live_batch_round_trip(vendor: str, env: str, model: str, tmp_path: Path) -> None:
    if not os.environ.get(env):
        pytest.skip(f"live {vendor} batch test: {env} is not set")
    async with Engine(cache_dir=tmp_path / "cache") as engine:
        scorer = engine.model(f"{vendor}/{model}", decoding=opro.Decoding(max_tokens=8))
        if WAIT:
            report = await evaluate_in_batches(
                engine,
                ["Reply with exactly one word: True or False."],
                [opro.Example("Is 2 even?", "True")],
                scorer,
                run_dir=tmp_path / "run",
                settings=BatchSettings(poll_first_s=30.0, poll_max_s=600.0),
            )
            assert report.totals.calls == 1 and report.totals.errors == 0
            assert report.totals.tokens_in > 0 and report.totals.cost_usd > 0
            return
        api = batch_api(scorer.provider)
        request = scorer.request("Reply with exactly one word: pong")
        batch_id = await api.submit([api.line(scorer.key(request), request)], "opro-live-test")
        state = await api.state(batch_id)
        assert state.batch_id == batch_id and state.phase in ("running", "ended")
        await api.cancel(batch_id)
        after = await api.state(batch_id)
        assert after.status in ("cancelling", "cancelled", "canceling", "ended", "completed")
