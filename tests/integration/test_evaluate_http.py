"""End to end over real HTTP: engine -> aiohttp -> the loopback fake OpenAI server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import opro
from opro.caches.memory import MemoryCache
from opro.engine.engine import Engine
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig

EXAMPLES = [opro.Example(f"Is {i} even?", "Yes" if i % 2 == 0 else "No") for i in range(20)]
TRUTH = {ex.input: ex.target for ex in EXAMPLES}
GOOD = "Answer with care."


def responder(prompt: str) -> str:
    """Right when the good instruction is in the prompt, always "Yes" otherwise."""
    question = next((q for q in TRUTH if q in prompt), None)
    if question is not None and GOOD in prompt:
        return f"The answer is {TRUTH[question]}."
    return "Yes"


class ExactGrader:
    version = "test-1"

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        return prediction.rstrip(".").rsplit(" ", 1)[-1] == example.target


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(FakeServerConfig(responder=responder)) as srv:
        yield srv


def engine_for(tmp_path: Path, **kw: object) -> Engine:
    retry = opro.RetryPolicy(base_delay=0.001, max_delay=0.01, timeout=5.0, **kw)  # type: ignore[arg-type]
    return Engine(cache_dir=tmp_path / "cache", retry=retry)


async def run_eval(
    engine: Engine, server: FakeOpenAIServer, instructions: list[str], **model_kw: object
) -> opro.EvalReport:
    scorer = engine.model("openai/fake-model", base_url=server.base_url, **model_kw)  # type: ignore[arg-type]
    return await engine.evaluate(instructions, EXAMPLES, scorer, grader=ExactGrader())


async def test_scores_every_instruction_and_each_repeat(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    async with engine_for(tmp_path) as engine:
        report = await run_eval(engine, server, [GOOD, "", GOOD, "  "])
    accs = [s.accuracy for s in report.instructions]
    assert accs == [1.0, 0.5, 1.0, 0.5]
    assert [s.duplicate_of for s in report.instructions] == [None, None, 0, 1]
    assert report.instructions[3].canonical == ""
    # Two distinct prompts per example x 20 examples: 40 pairs, each sent exactly once.
    assert report.totals.pairs == 40 and report.totals.calls == 40
    assert server.requests_total == 40
    assert max(server.prompt_counts.values()) == 1
    assert report.totals.tokens_in > 0 and report.totals.tokens_out > 0


async def test_a_rerun_makes_zero_calls(server: FakeOpenAIServer, tmp_path: Path) -> None:
    async with engine_for(tmp_path) as engine:
        first = await run_eval(engine, server, [GOOD, ""])
    async with engine_for(tmp_path) as engine:
        second = await run_eval(engine, server, [GOOD, ""])
    assert server.requests_total == 40
    assert second.totals.calls == 0 and second.totals.cache_hits == 40
    assert [s.accuracy for s in second.instructions] == [s.accuracy for s in first.instructions]
    assert second.totals.tokens_in == 0  # nothing was paid for the second time


@pytest.mark.parametrize(
    "kind",
    [
        "500",
        "502",
        "503",
        "truncated",
        "drop",
        "empty_choices",
        "missing_fields",
        "429",
        "429_bare",
    ],
)
async def test_transient_faults_are_retried_and_never_graded(
    server: FakeOpenAIServer, tmp_path: Path, kind: str
) -> None:
    server.config.retry_after_s = 0.01
    server.inject(kind, count=5)
    async with engine_for(tmp_path) as engine:
        report = await run_eval(engine, server, [GOOD])
    score = report.instructions[0]
    assert (score.accuracy, score.errors, score.n) == (1.0, 0, 20)
    assert server.requests_total == 25
    assert report.totals.calls == 25
    assert max(server.prompt_counts.values()) == 1
    if kind.startswith("429"):
        assert report.totals.n429 == 5


async def test_a_hanging_server_times_out_and_is_retried(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.inject("hang", count=2)
    retry = opro.RetryPolicy(base_delay=0.001, timeout=0.2)
    async with Engine(cache_dir=tmp_path, retry=retry) as engine:
        report = await run_eval(engine, server, [GOOD])
    assert report.instructions[0].accuracy == 1.0
    assert report.totals.calls == 22


async def test_persistent_failures_are_errors_not_wrong_answers_and_not_cached(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.config.fault_rates = {"503": 1.0}
    async with engine_for(tmp_path, max_attempts=3) as engine:
        report = await run_eval(engine, server, [GOOD])
    score = report.instructions[0]
    assert (score.errors, score.correct, score.accuracy) == (20, 0, None)
    assert server.requests_total == 60  # 3 attempts each, no more
    assert "HTTP 503" in score.error_messages[0]
    server.config.fault_rates = {}
    async with engine_for(tmp_path) as engine:
        healed = await run_eval(engine, server, [GOOD])
    assert healed.instructions[0].accuracy == 1.0
    assert healed.totals.calls == 20  # the failures had not been cached


async def test_a_rejected_key_aborts_at_once_without_retries(tmp_path: Path) -> None:
    config = FakeServerConfig(responder=responder, require_api_key="sk-right")
    async with FakeOpenAIServer(config) as srv, engine_for(tmp_path) as engine:
        scorer = engine.model(
            "openai/fake-model",
            base_url=srv.base_url,
            api_key="sk-wrong",
            limits=opro.LimitConfig(max_concurrency=4),
        )
        with pytest.raises(opro.EvaluationAborted, match="HTTP 401"):
            await engine.evaluate([GOOD], EXAMPLES, scorer, grader=ExactGrader())
        assert srv.requests_total <= 4 + 4  # the first wave, never a retry per pair
        assert srv.accepted == 0


async def test_partial_errors_leave_the_rest_graded(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.inject("400", count=3)
    async with engine_for(tmp_path) as engine:
        report = await run_eval(engine, server, [GOOD], limits=opro.LimitConfig(max_concurrency=1))
    score = report.instructions[0]
    assert (score.errors, score.correct, score.graded) == (3, 17, 17)
    assert score.accuracy == 1.0
    assert server.requests_total == 20  # a 400 is not retried


async def test_adapts_to_a_rate_limited_server_without_a_given_rate(tmp_path: Path) -> None:
    config = FakeServerConfig(responder=responder, rpm=1200)  # bucket of 20, 20/s
    async with FakeOpenAIServer(config) as srv, engine_for(tmp_path, max_attempts=50) as engine:
        scorer = engine.model(
            "openai/fake-model", base_url=srv.base_url, limits=opro.LimitConfig(max_concurrency=64)
        )
        report = await engine.evaluate(
            [GOOD, "", "Think.", "Be brief."], EXAMPLES, scorer, grader=ExactGrader()
        )
        assert report.totals.errors == 0 and report.totals.pairs == 80
        assert srv.accepted == 80 and max(srv.prompt_counts.values()) == 1
        assert report.totals.n429 == srv.n429 > 0
        assert scorer.limiter.concurrency < 64  # it backed off instead of hammering


async def test_completions_api_and_n_emulation(server: FakeOpenAIServer) -> None:
    server.config.ignore_n = True
    async with Engine(cache=MemoryCache()) as engine:
        model = engine.model("openai/fake-model", base_url=server.base_url, api="completions")
        gen = await model.generate(opro.Request(prompt="Is 2 even?", temperature=1.0, n=3))
        assert len(gen.completion.texts) == 3
        assert server.requests_total == 3
        assert model.provider.supports_n is False


async def test_the_one_call_api_runs_inside_the_callers_loop(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    report = await opro.evaluate(
        [GOOD],
        EXAMPLES,
        "openai/fake-model",
        base_url=server.base_url,
        cache_dir=str(tmp_path),
        grader=ExactGrader(),
    )
    assert report.instructions[0].accuracy == 1.0
    assert report.to_dict()["totals"]["pairs"] == 20


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_request_wire_format(server: FakeOpenAIServer, api: str) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        model = engine.model(
            "openai/fake-model", base_url=server.base_url, api=api, api_key="sk-test"
        )
        request = opro.Request(
            prompt="Q: hi\n\nA:", temperature=0.5, max_tokens=7, stop=("\n", "Q:"), seed=3, n=2
        )
        await model.generate(request)
    body = server.last_body
    assert body["model"] == "fake-model"
    assert (body["temperature"], body["max_tokens"], body["stop"], body["seed"], body["n"]) == (
        0.5,
        7,
        ["\n", "Q:"],
        3,
        2,
    )
    if api == "chat":
        assert body["messages"] == [{"role": "user", "content": "Q: hi\n\nA:"}]
    else:
        assert body["prompt"] == "Q: hi\n\nA:"


async def test_defaults_are_omitted_from_the_wire(server: FakeOpenAIServer) -> None:
    async with Engine(cache=MemoryCache()) as engine:
        model = engine.model("openai/fake-model", base_url=server.base_url)
        await model.generate(model.request("Q: hi\n\nA:"))
    assert {"n", "stop", "seed"}.isdisjoint(server.last_body)
