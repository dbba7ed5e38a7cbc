"""What the `opro` loggers say about a run: a 429 storm, a budget refusal, a resumed run's
spend. INFO is for decisions (one line each), DEBUG for every call; a run that goes well
logs nothing at WARNING."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import opro
from opro.engine.budget import Budget
from opro.engine.engine import Engine
from opro.engine.ledger import LEDGER, SpendLedger, recording
from opro.engine.limits import LimitConfig
from opro.engine.model import Decoding
from opro.engine.spend import Spend
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

EXAMPLES = [opro.Example(f"Is {i} even?", "True" if i % 2 == 0 else "False") for i in range(40)]
INSTRUCTIONS = ["", "Answer True or False."]


class ExactGrader:
    version = "test-exact"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction == example.target


def messages(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.levelno == level]


async def test_a_429_storm_logs_one_cut_of_the_window_and_every_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 64 calls at once; the server takes 32 and answers the rest 429, "retry after 1 s".
    config = FakeServerConfig(latency_s=0.2, max_concurrency=32, retry_after_s=1.0)
    caplog.set_level(logging.DEBUG, logger="opro")
    async with FakeOpenAIServer(config) as server, Engine(cache_dir=tmp_path) as engine:
        scorer = engine.model(
            "openai/fake-model",
            base_url=server.base_url,
            limits=LimitConfig(max_concurrency=64),
        )
        report = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
    assert report.totals.errors == 0 and server.n429 > 0
    cuts = [m for m in messages(caplog, "opro.limits", logging.INFO) if "window" in m]
    assert len(cuts) == 1 and "concurrency window 64 -> 32" in cuts[0]
    pauses = [m for m in messages(caplog, "opro.limits", logging.INFO) if "pausing" in m]
    assert len(pauses) == 1 and "1.00 s (Retry-After)" in pauses[0]
    retries = [m for m in messages(caplog, "opro.model", logging.DEBUG) if "retrying in" in m]
    assert len(retries) == server.n429  # every wait, with why and how long
    assert all("429, the server asked for 1 s" in m for m in retries)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_healthy_run_logs_nothing_at_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="opro")
    async with FakeOpenAIServer() as server, Engine(cache_dir=tmp_path) as engine:
        scorer = engine.model("openai/fake-model", base_url=server.base_url)
        await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
    assert [r for r in caplog.records if r.name.startswith("opro")]  # it did log
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    [plan] = messages(caplog, "opro.evaluate", logging.INFO)
    assert "80 pairs, 0 from the cache, 80 to call" in plan


async def test_a_budget_refusal_is_logged_once_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="opro")
    budget = Budget(max_tokens=300)  # about 40 of the 80 calls
    async with FakeOpenAIServer() as server, Engine(cache_dir=tmp_path, budget=budget) as engine:
        scorer = engine.model(
            "openai/fake-model", base_url=server.base_url, decoding=Decoding(max_tokens=8)
        )
        report = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer, grader=ExactGrader())
    assert report.stopped == "budget" and budget.refused > 1
    [refusal] = messages(caplog, "opro.budget", logging.INFO)
    assert "budget reached" in refusal and "refusing a call whose worst case is" in refusal
    later = [m for m in messages(caplog, "opro.budget", logging.DEBUG) if "refusing" in m]
    assert len(later) == budget.refused - 1


async def test_a_resumed_run_logs_what_it_spent_and_what_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spent = Spend(calls=10, tokens_in=900, tokens_out=100, cost_usd=0.25)
    SpendLedger(tmp_path / LEDGER).write(1, spent, spent)
    with caplog.at_level(logging.INFO, logger="opro.budget"):
        async with recording(Budget(max_usd=1.0), tmp_path, resume=True):
            pass
    [line] = messages(caplog, "opro.budget", logging.INFO)
    assert "the run spent $0.2500, 1000 tokens in 10 calls before (from spend.json)" in line
    assert "this session may spend $0.7500 of $1" in line
