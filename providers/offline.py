"""A stand-in for a provider when nothing may be called: plans (`--dry-run`).

A plan renders every prompt and looks it up in the result cache, so it needs the cache
identity a real run would use, but it must not need an API key, a reachable server or a
model's weights. `offline_provider` asks the real provider class for that identity: an HTTP
provider is built with a placeholder credential (its constructor refuses to run without a key
on the vendor's URL, and reads the user's key from the environment otherwise; neither is
wanted here) and then dropped, so the placeholder is never sent and the user's key is never
read. When the identity itself needs what is missing (the local provider hashes the model
file), the stand-in has none: `identity_known` is False, its cache keys match nothing, and the
plan counts every pair as a call to make.
"""

from __future__ import annotations

from typing import Any

from opro.providers.base import HttpPool, Provider
from opro.providers.errors import ConfigurationError
from opro.providers.registry import Connection, create_provider, parse_spec
from opro.providers.types import Completion, Request

# Lets an HTTP provider be constructed without the user's key; never sent anywhere.
PLACEHOLDER_KEY = "plan-only-never-sent"
# Providers whose identity needs a local file that may be missing.
_LOCAL_FILES = frozenset({"local"})


class OfflineProvider(Provider):
    """The name, identity and connection of a model, without any way to call it."""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        identity: dict[str, Any] | None,
        connection: str,
        why_unknown: str | None = None,
    ) -> None:
        super().__init__(model)
        self.name = name
        self._identity = identity
        self._connection = connection
        self.why_unknown = why_unknown

    @property
    def identity_known(self) -> bool:
        return self._identity is not None

    def cache_identity(self) -> dict[str, Any]:
        if self._identity is None:
            return {"model": self.spec, "offline": "identity unknown"}  # matches no real entry
        return dict(self._identity)

    def connection_key(self) -> str:
        return self._connection

    # Whether the real provider takes `n` (set by `offline_provider`): a plan of the
    # optimizer's calls counts one request per step when it does.
    takes_n: bool = False

    @property
    def supports_n(self) -> bool:
        return self.takes_n

    async def complete(self, request: Request) -> Completion:
        raise RuntimeError(f"{self.spec}: a plan-only model was asked to call (a bug)")


def offline_provider(spec: str, *, base_url: str | None = None, **options: Any) -> OfflineProvider:
    """The stand-in for `spec`; a name, URL or option a real run would refuse is refused here
    too. `options` are the provider's own (e.g. `api`), as `Engine.model` takes them."""
    name, model = parse_spec(spec)
    connection = Connection(base_url=base_url, api_key=PLACEHOLDER_KEY)
    try:
        real = create_provider(spec, connection, http=HttpPool(), **options)
    except ConfigurationError as exc:
        if name not in _LOCAL_FILES:
            raise
        return OfflineProvider(
            name, model, identity=None, connection=f"{name}|{model}", why_unknown=str(exc)
        )
    offline = OfflineProvider(
        real.name,
        real.model,
        identity=real.cache_identity(),
        connection=real.connection_key(),
    )
    offline.takes_n = real.supports_n
    return offline
