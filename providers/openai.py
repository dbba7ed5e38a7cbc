"""`openai/<model>`: OpenAI's Chat Completions and legacy Completions APIs over aiohttp.

The same class serves every server that speaks this wire format (vLLM, llama.cpp's
server, Ollama, LM Studio, gateways): only the base URL and, for local servers, the
missing key differ. Requests are JSON posted with orjson on the engine's shared session;
responses are parsed defensively, because a 200 with a truncated or empty body is a
server fault to retry, not an answer to grade.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any, Literal

import orjson

from opro.providers.base import HttpPool, Provider, fingerprint
from opro.providers.errors import ConfigurationError, TransientError
from opro.providers.http import classify_status, parse_rate_limit_headers, post_json, scrubbed
from opro.providers.types import Completion, Request, Usage
from opro.providers.urls import parse_base_url
from opro.providers.usage import reported_usage

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
Api = Literal["chat", "completions"]

# Models that only exist on the legacy /completions endpoint.
_COMPLETION_ONLY = re.compile(r"(-instruct$|^davinci|^babbage|^text-)")


class OpenAIProvider(Provider):
    """One model behind an OpenAI-compatible endpoint."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        http: HttpPool,
        base_url: str | None = None,
        api_key: str | None = None,
        api: Api | None = None,
        timeout: float = 120.0,
        name: str = "openai",
    ) -> None:
        super().__init__(model)
        self.name = name
        self._http = http
        key_env = "the OPENAI_API_KEY environment variable"
        if name != "openai":  # openai-compatible/ sends no key from the environment
            key_env += f" and use openai/{model}, which sends it"
        self._base = parse_base_url(
            base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL,
            key_env=key_env,
        )
        self.base_url = self._base.url
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not self._api_key and self.base_url == OPENAI_DEFAULT_BASE_URL:
            raise ConfigurationError(
                "OPENAI_API_KEY is not set: export it, or give a base URL "
                "(--scorer-base-url / OPENAI_BASE_URL) for a local OpenAI-compatible server"
            )
        self.api: Api = api or ("completions" if _COMPLETION_ONLY.search(model) else "chat")
        self.timeout = timeout
        # Flips to False the first time a server answers fewer choices than `n` asked for.
        self.n_supported = True
        self._headers = {"Content-Type": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"

    def connection_key(self) -> str:
        return f"{self.name}|{self._base.identity()}|{fingerprint(self._api_key)}"

    def cache_identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"model": self.spec, "api": self.api}
        if self.base_url != OPENAI_DEFAULT_BASE_URL:
            # Two local servers can answer to the same model name with different weights.
            identity["base_url"] = self._base.safe  # a key in the query stays out of keys
        return identity

    @property
    def supports_n(self) -> bool:
        return self.n_supported

    def _body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.n != 1:
            body["n"] = request.n
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if self.api == "chat":
            body["messages"] = [
                {"role": m.role, "content": m.content} for m in request.as_messages()
            ]
        else:
            body["prompt"] = request.as_text()
        return body

    async def complete(self, request: Request) -> Completion:
        path = "/chat/completions" if self.api == "chat" else "/completions"
        url = self._base.join(path)
        where = f"{self.spec} at {self._base.safe}"
        resp = await post_json(
            self._http.session(),
            url,
            self._body(request),
            headers=self._headers,
            timeout=self.timeout,
            where=where,
        )
        if resp.status >= 300:
            err = classify_status(resp.status, resp.body, resp.headers, where=where)
            raise scrubbed(err, self._api_key, *self._base.secrets)
        completion = self._parse(resp.body, where)
        info = parse_rate_limit_headers(resp.headers)
        if len(completion.texts) < request.n:
            self.n_supported = False
        if info is not None:
            completion = replace(completion, rate_limit=info)
        return completion

    def _parse(self, raw: bytes, where: str) -> Completion:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TransientError(f"{where}: response is not valid JSON ({len(raw)} bytes)") from exc
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise TransientError(f"{where}: response has no choices")
        texts: list[str] = []
        finish: list[str | None] = []
        for choice in sorted(
            choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0
        ):
            text = self._choice_text(choice)
            if text is None:
                raise TransientError(f"{where}: a choice has no text")
            texts.append(text)
            finish.append(choice.get("finish_reason"))
        # A missing or malformed usage keeps the answer; the engine bills the worst case.
        usage = data.get("usage")
        counts = usage if isinstance(usage, dict) else {}
        reported = reported_usage(counts.get("prompt_tokens"), counts.get("completion_tokens"))
        return Completion(
            texts=tuple(texts),
            usage=reported or Usage(),
            finish_reasons=tuple(finish),
            usage_known=reported is not None,
        )

    def _choice_text(self, choice: Any) -> str | None:
        if not isinstance(choice, dict):
            return None
        if self.api == "chat":
            message = choice.get("message")
            if not isinstance(message, dict):
                return None
            content = message.get("content")
            # null content (a refusal, or every token spent on reasoning) is an empty answer.
            return content if isinstance(content, str) else ("" if content is None else None)
        text = choice.get("text")
        return text if isinstance(text, str) else None
