"""`provider/model` names -> provider instances, importing each vendor module lazily.

Only the module for a provider that is actually used gets imported, so an optional
dependency of one vendor never breaks another. The registry is a table of factories, not
of live objects: every engine builds its own providers.

What a provider is built from comes in two parts. `Connection` is the same for every
provider (base URL, key, timeout; the in-process ones ignore it). Provider options are
each provider's own (`api`, `n_ctx`, `latency_s`, ...): every entry of `PROVIDERS` declares
the names it accepts, and any other name is a `SettingsError` that lists them, instead of
being silently ignored. An option given as None means "the provider's default", so a
caller may pass the same optional settings to every provider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opro.errors import SettingsError
from opro.providers.base import HttpPool, Provider
from opro.providers.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how a provider connects: the settings every provider shares."""

    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 120.0


Factory = Callable[[str, str, Connection, HttpPool, Mapping[str, Any]], Provider]


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """How to build one provider, and the provider options it accepts."""

    build: Factory
    options: tuple[str, ...] = ()


def _api(value: Any) -> Any:
    if value not in (None, "chat", "completions"):
        raise ConfigurationError(f"unknown API flavour {value!r}; use chat or completions")
    return value


def _openai(
    model: str, name: str, conn: Connection, http: HttpPool, opts: Mapping[str, Any]
) -> Provider:
    from opro.providers.openai import OpenAIProvider

    return OpenAIProvider(
        model,
        http=http,
        base_url=conn.base_url,
        api_key=conn.api_key,
        api=_api(opts.get("api")),
        timeout=conn.timeout,
        name=name,
    )


def _openai_compatible(
    model: str, name: str, conn: Connection, http: HttpPool, opts: Mapping[str, Any]
) -> Provider:
    if not conn.base_url:
        raise ConfigurationError(
            f"{name}/{model} needs a base URL: pass --scorer-base-url (or base_url=)"
        )
    # A local server usually wants no key: never fall back to the user's OpenAI key.
    return _openai(model, name, replace(conn, api_key=conn.api_key or ""), http, opts)


def _anthropic(
    model: str, name: str, conn: Connection, http: HttpPool, opts: Mapping[str, Any]
) -> Provider:
    from opro.providers.anthropic import AnthropicProvider

    return AnthropicProvider(
        model, http=http, base_url=conn.base_url, api_key=conn.api_key, timeout=conn.timeout
    )


def _google(
    model: str, name: str, conn: Connection, http: HttpPool, opts: Mapping[str, Any]
) -> Provider:
    # "gemini/" is an alias: the provider always names itself "google", so both spellings
    # share one cache identity and one connection key.
    from opro.providers.gemini import GeminiProvider

    return GeminiProvider(
        model, http=http, base_url=conn.base_url, api_key=conn.api_key, timeout=conn.timeout
    )


def _local(
    model: str, name: str, conn: Connection, http: HttpPool, opts: Mapping[str, Any]
) -> Provider:
    from opro.providers.local import DEFAULT_N_CTX, DEFAULT_N_THREADS, LocalProvider

    n_ctx = opts.get("n_ctx")
    n_threads = opts.get("n_threads")
    return LocalProvider(
        model,
        api=_api(opts.get("api")),
        n_ctx=DEFAULT_N_CTX if n_ctx is None else n_ctx,
        n_threads=DEFAULT_N_THREADS if n_threads is None else n_threads,
    )


def _simulated(
    model: str, name: str, conn: Connection, http: HttpPool, opts: Mapping[str, Any]
) -> Provider:
    from opro.providers.simulated import SimulatedProvider

    return SimulatedProvider(model, latency_s=opts.get("latency_s", 0.0))


PROVIDERS: dict[str, ProviderEntry] = {
    "openai": ProviderEntry(_openai, ("api",)),
    "openai-compatible": ProviderEntry(_openai_compatible, ("api",)),
    "anthropic": ProviderEntry(_anthropic),
    "google": ProviderEntry(_google),
    "gemini": ProviderEntry(_google),
    "local": ProviderEntry(_local, ("api", "n_ctx", "n_threads")),
    "simulated": ProviderEntry(_simulated, ("latency_s",)),
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


def provider_options(spec: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options given for `spec` (None values dropped); names it does not take refused."""
    provider, _ = parse_spec(spec)
    given = {name: value for name, value in options.items() if value is not None}
    accepted = PROVIDERS[provider].options
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no provider options"
        raise SettingsError(
            f"{spec}: unknown provider option{'s' * (len(unknown) > 1)} "
            f"{', '.join(unknown)}; {provider!r} takes {takes}"
        )
    return given


def create_provider(
    spec: str,
    connection: Connection | None = None,
    *,
    http: HttpPool | None = None,
    **options: Any,
) -> Provider:
    """The provider `spec` names, built from `connection` and its own `options`."""
    provider, model = parse_spec(spec)
    given = provider_options(spec, options)
    return PROVIDERS[provider].build(
        model, provider, connection or Connection(), http or HttpPool(), given
    )
