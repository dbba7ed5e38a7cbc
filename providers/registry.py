"""`provider/model` names -> provider instances, importing each vendor module lazily.

Only the module for a provider that is actually used gets imported, so an optional
dependency of one vendor never breaks another. The registry is a table of factories, not
of live objects: every engine builds its own providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from opro.providers.base import HttpPool, Provider
from opro.providers.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Per-model connection settings a user may give (all optional)."""

    base_url: str | None = None
    api_key: str | None = None
    api: str | None = None
    timeout: float = 120.0
    latency_s: float = 0.0  # simulated provider only
    n_ctx: int | None = None  # local provider only: context length (default 2048)
    n_threads: int | None = None  # local provider only: CPU threads (default 2)


def _openai(model: str, opts: ProviderOptions, http: HttpPool, name: str) -> Provider:
    from opro.providers.openai import OpenAIProvider

    api: Any = opts.api
    if api not in (None, "chat", "completions"):
        raise ConfigurationError(f"unknown API flavour {api!r}; use chat or completions")
    return OpenAIProvider(
        model,
        http=http,
        base_url=opts.base_url,
        api_key=opts.api_key,
        api=api,
        timeout=opts.timeout,
        name=name,
    )


def _openai_compatible(model: str, opts: ProviderOptions, http: HttpPool, name: str) -> Provider:
    if not opts.base_url:
        raise ConfigurationError(
            f"{name}/{model} needs a base URL: pass --scorer-base-url (or base_url=)"
        )
    # A local server usually wants no key: never fall back to the user's OpenAI key.
    return _openai(model, replace(opts, api_key=opts.api_key or ""), http, name)


def _anthropic(model: str, opts: ProviderOptions, http: HttpPool, name: str) -> Provider:
    from opro.providers.anthropic import AnthropicProvider

    return AnthropicProvider(
        model, http=http, base_url=opts.base_url, api_key=opts.api_key, timeout=opts.timeout
    )


def _google(model: str, opts: ProviderOptions, http: HttpPool, name: str) -> Provider:
    # "gemini/" is an alias: the provider always names itself "google", so both spellings
    # share one cache identity and one connection key.
    from opro.providers.gemini import GeminiProvider

    return GeminiProvider(
        model, http=http, base_url=opts.base_url, api_key=opts.api_key, timeout=opts.timeout
    )


def _local(model: str, opts: ProviderOptions, http: HttpPool, name: str) -> Provider:
    from opro.providers.local import DEFAULT_N_CTX, DEFAULT_N_THREADS, LocalProvider

    api: Any = opts.api
    if api not in (None, "chat", "completions"):
        raise ConfigurationError(f"unknown API flavour {api!r}; use chat or completions")
    return LocalProvider(
        model,
        api=api,
        n_ctx=opts.n_ctx or DEFAULT_N_CTX,
        n_threads=opts.n_threads or DEFAULT_N_THREADS,
    )


def _simulated(model: str, opts: ProviderOptions, http: HttpPool, name: str) -> Provider:
    from opro.providers.simulated import SimulatedProvider

    return SimulatedProvider(model, latency_s=opts.latency_s)


Factory = Callable[[str, ProviderOptions, HttpPool, str], Provider]

PROVIDERS: dict[str, Factory] = {
    "openai": _openai,
    "openai-compatible": _openai_compatible,
    "anthropic": _anthropic,
    "google": _google,
    "gemini": _google,
    "local": _local,
    "simulated": _simulated,
}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split `provider/model` (the model part may itself contain slashes)."""
    provider, sep, model = spec.partition("/")
    if not sep or not provider or not model:
        raise ConfigurationError(
            f"model {spec!r} is not of the form provider/model "
            f"(providers: {', '.join(sorted(PROVIDERS))})"
        )
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"unknown provider {provider!r} in {spec!r}; known: {', '.join(sorted(PROVIDERS))}"
        )
    return provider, model


def create_provider(
    spec: str, options: ProviderOptions | None = None, *, http: HttpPool | None = None
) -> Provider:
    provider, model = parse_spec(spec)
    return PROVIDERS[provider](model, options or ProviderOptions(), http or HttpPool(), provider)
