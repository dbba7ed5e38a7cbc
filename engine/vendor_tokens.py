"""Input tokens counted by the model's own tokenizer, when it is available offline.

A plan's input tokens are otherwise the byte estimate of `engine.tokens` (four characters a
token). Two vendors' tokenizers can run here without a network:

* OpenAI models, through tiktoken, when the model's encoding file is already on disk where
  tiktoken keeps it (`$TIKTOKEN_CACHE_DIR`, else `$DATA_GYM_CACHE_DIR`, else
  `<tmp>/data-gym-cache`, named by the sha1 of its URL) and its sha256 is the published one.
  tiktoken downloads a missing or damaged file on first use, which would hang a plan on a
  machine without internet, so it is only asked once the file is known to be there and
  intact. A chat request adds a few tokens per message around the text (`CHAT_OVERHEAD`).
* `local/` GGUF models, through llama.cpp's own tokenizer, loading only the vocabulary
  (a tenth of a second, no weights); a chat request is rendered with the model's own chat
  template first, so the count is the one llama.cpp bills.

`counter_for(provider_name, model, api)` returns a `TokenCounter` (its `name` says which one a
plan used) or the byte estimate.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opro.engine.tokens import expected_text_tokens

# Tokens an OpenAI chat request adds around one user message: the message's role and
# separators, and the priming of the reply (OpenAI's documented counting recipe).
CHAT_OVERHEAD = 7

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
# tiktoken's encodings of OpenAI models: where the file comes from and its published sha256.
ENCODING_FILES: dict[str, tuple[str, str]] = {
    "o200k_base": (
        _BLOB + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        _BLOB + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "p50k_base": (
        _BLOB + "p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
    "r50k_base": (
        _BLOB + "r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts the prompt tokens of a request's text; `exact` when it is the vendor's own."""

    name: str
    exact: bool
    count: Callable[[str], int]


BYTE_ESTIMATE = TokenCounter("estimated at 4 characters a token", False, expected_text_tokens)


def tiktoken_cache_dir() -> Path | None:
    """Where tiktoken looks for its encoding files (None: its cache is switched off)."""
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in os.environ:
            value = os.environ[name]
            return Path(value) if value else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def encoding_file(encoding: str) -> Path | None:
    """The encoding's file where tiktoken will read it, if present and intact."""
    source = ENCODING_FILES.get(encoding)
    directory = tiktoken_cache_dir()
    if source is None or directory is None:
        return None
    url, sha256 = source
    path = directory / hashlib.sha1(url.encode()).hexdigest()
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return path if hashlib.sha256(data).hexdigest() == sha256 else None


def _tiktoken_counter(model: str, chat: bool) -> TokenCounter | None:
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        encoding = encoding_name_for_model(model)
    except KeyError:  # not an OpenAI model name tiktoken knows
        return None
    path = encoding_file(encoding)
    if path is None:
        return None
    key = (encoding, str(path), path.stat().st_mtime_ns)
    enc = _tiktoken_encoding(key)
    extra = CHAT_OVERHEAD if chat else 0
    return TokenCounter(
        f"tiktoken {encoding}", True, lambda text: len(enc.encode_ordinary(text)) + extra
    )


@functools.lru_cache(maxsize=8)
def _tiktoken_encoding(key: tuple[str, str, int]) -> Any:
    import tiktoken

    # The file is present with the published hash, so tiktoken reads it and never downloads.
    return tiktoken.get_encoding(key[0])


def _llama_counter(model: str, chat: bool) -> TokenCounter | None:
    from opro.providers.errors import ConfigurationError
    from opro.providers.local import resolve_model_path

    try:
        path = resolve_model_path(model)
    except ConfigurationError:
        return None
    try:
        vocab = _llama_vocab(str(path), path.stat().st_mtime_ns)
    except Exception:  # no llama_cpp, or a file it cannot read: fall back to the estimate
        return None
    if vocab is None:
        return None
    llama, render = vocab

    def count(text: str) -> int:
        if chat and render is not None:
            prompt = render(text)
            return len(llama.tokenize(prompt.encode(), add_bos=False, special=True))
        return len(llama.tokenize(text.encode(), add_bos=True, special=False))

    return TokenCounter("llama.cpp tokenizer (exact)", True, count)


@functools.lru_cache(maxsize=4)
def _llama_vocab(path: str, mtime_ns: int) -> tuple[Any, Callable[[str], str] | None] | None:
    """The vocabulary of a GGUF file (no weights) and its chat template as a function."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    # llama.cpp prints a context-size notice for a vocabulary-only load even when quiet.
    with suppress_stdout_stderr(disable=False):
        llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    atexit.register(llama.close)  # before llama.cpp's own teardown, not in a late __del__
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return llama, None
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(llama.token_eos()),
        bos_token=llama._model.token_get_text(llama.token_bos()),
    )

    def render(text: str) -> str:
        return str(formatter(messages=[{"role": "user", "content": text}]).prompt)

    return llama, render


def counter_for(provider: str, model: str, api: str | None) -> TokenCounter:
    """The most exact offline token counter for `provider/model` (`api`: chat or completions;
    None counts as chat, what the providers use by default)."""
    chat = api != "completions"
    found: TokenCounter | None = None
    if provider == "openai":
        found = _tiktoken_counter(model, chat)
    elif provider == "local":
        found = _llama_counter(model, chat)
    return found or BYTE_ESTIMATE
