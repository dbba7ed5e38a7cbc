"""`opro evaluate --batch` as a user runs it: a real subprocess, killed with SIGKILL while
its batch is pending, then `--resume`: the same batch is collected, none is paid twice.

The fake batch server runs in the test's loop (real HTTP on loopback); its state machine,
not the wall clock, decides when the batch ends (`hold`, `hang_create`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from opro.engine.batch_state import BatchStateFile
from opro.testing.fake_openai import FakeServerConfig
from opro.testing.fake_openai_batch import FakeOpenAIBatchServer

KEY = "sk-cli-batch-test-98765"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIBatchServer]:
    async with FakeOpenAIBatchServer(FakeServerConfig(require_api_key=KEY)) as srv:
        yield srv


def argv(fake: FakeOpenAIBatchServer, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "opro.cli.main", "evaluate",
        "--task", "synthetic/boolean_expressions", "--limit", "6",
        "--instruction", "Evaluate the expression.", "--instruction", "Answer True or False.",
        "--scorer", "openai/fake-model", "--scorer-base-url", fake.base_url,
        "--price", "1,2", "--budget-usd", "1",
        "--cache-dir", str(tmp_path / "cache"),
        "--batch", "--run-dir", str(tmp_path / "run"), "--batch-poll-max", "0.01",
        "--out", str(tmp_path / "report.json"),
        *extra,
    ]  # fmt: skip


async def start(
    fake: FakeOpenAIBatchServer, tmp_path: Path, *extra: str
) -> asyncio.subprocess.Process:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return await asyncio.create_subprocess_exec(
        *argv(fake, tmp_path, *extra),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.kill()  # SIGKILL: no clean-up runs in the child
    await proc.communicate()


def batch_cost(fake: FakeOpenAIBatchServer) -> float:
    return (fake.batch_billed_prompt_tokens * 1.0 + fake.batch_billed_completion_tokens * 2.0) / 2e6


async def resume_and_check(fake: FakeOpenAIBatchServer, tmp_path: Path) -> str:
    code, out, err = await finish(await start(fake, tmp_path, "--resume"))
    assert code == 0, err
    assert fake.creates == 1  # the batch of the killed session, collected: none paid twice
    assert fake.requests_total == 0
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report["totals"]["calls"] == 12 and report["totals"]["errors"] == 0
    assert report["totals"]["cost_usd"] == pytest.approx(batch_cost(fake))
    assert [e.status for e in BatchStateFile(tmp_path / "run").load()] == ["collected"]
    ledger = orjson.loads((tmp_path / "run" / "spend.json").read_bytes())
    assert batch_cost(fake) <= ledger["settled"]["cost_usd"] <= 1.0
    assert KEY not in (tmp_path / "run" / "batches.json").read_text()
    assert KEY not in out + err
    assert "completed: 12 answers, 0 failed" in err  # what the user sees on stderr
    return err


async def test_kill_while_pending_then_resume_collects_the_same_batch(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.hold = True
    proc = await start(fake, tmp_path)
    await fake.polled.wait()  # created, recorded, and polled once
    await kill(proc)
    [entry] = BatchStateFile(tmp_path / "run").load()
    assert entry.status == "submitted" and entry.batch_id in fake.batches
    fake.control.hold = False
    await resume_and_check(fake, tmp_path)
    # The run directory is the run's: a fresh session must say --resume; with it, all cached.
    code, _, err = await finish(await start(fake, tmp_path))
    assert code == 2 and "add --resume" in err
    code, _, err = await finish(await start(fake, tmp_path, "--resume"))
    assert code == 0 and fake.creates == 1, err


async def test_kill_between_create_and_record_finds_the_batch_by_its_token(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.hang_create = True
    proc = await start(fake, tmp_path)
    await fake.created.wait()  # the batch exists; the session has not heard back
    await kill(proc)
    [entry] = BatchStateFile(tmp_path / "run").load()
    assert entry.status == "intent" and entry.batch_id is None
    [batch] = fake.batches.values()
    assert batch.metadata == {"opro_token": entry.token}
    fake.control.hang_create = False
    fake.release_create.set()
    err = await resume_and_check(fake, tmp_path)
    assert fake.lists >= 1 and "found batch" in err


async def test_pending_batch_without_resume_is_refused(
    fake: FakeOpenAIBatchServer, tmp_path: Path
) -> None:
    fake.control.hold = True
    proc = await start(fake, tmp_path)
    await fake.polled.wait()
    await kill(proc)
    code, _, err = await finish(await start(fake, tmp_path))
    assert code == 2 and "--resume" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert fake.creates == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--scorer", "simulated/x"), "has none: drop --batch"),
        (("--scorer", "local/smollm2-135m"), "has none: drop --batch"),
    ],
)
async def test_unsupported_scorer_is_one_line(
    fake: FakeOpenAIBatchServer, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    code, _, err = await finish(await start(fake, tmp_path, *extra))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert fake.creates == 0


async def test_batch_needs_a_run_dir(fake: FakeOpenAIBatchServer, tmp_path: Path) -> None:
    args = argv(fake, tmp_path)
    i = args.index("--run-dir")
    del args[i : i + 2]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    code, _, err = await finish(proc)
    assert code == 2 and "--batch needs --run-dir" in err
