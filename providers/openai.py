"""`openai/<model>`: OpenAI's Chat Completions and legacy Completions APIs over aiohttp.

The same class serves every server that speaks this wire format (vLLM, llama.cpp's
server, Ollama, LM Studio, gateways): only the base URL and, for local servers, the
missing key differ. Requests are JSON posted with orjson on the engine's shared session;
responses are parsed defensively, because a 200 with a truncated or empty body is a
server fault to retry, not an answer to grade.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Literal

import orjson

from opro.providers.base import HttpPool, HttpProvider
from opro.providers.errors import TransientError
from opro.providers.http import parse_rate_limit_headers
from opro.providers.types import Completion, Request, Usage
from opro.providers.usage import reported_usage

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
Api = Literal["chat", "completions"]

# Models that only exist on the legacy /completions endpoint.
_COMPLETION_ONLY = re.compile(r"(-instruct$|^davinci|^babbage|^text-)")


class OpenAIProvider(HttpProvider):
    """One model behind an OpenAI-compatible endpoint."""

    name = "openai"
    default_base_url = OPENAI_DEFAULT_BASE_URL
    base_url_env = "OPENAI_BASE_URL"
    key_envs = ("OPENAI_API_KEY",)
    missing_key = (
        "OPENAI_API_KEY is not set: export it, or give a base URL "
        "(--scorer-base-url / OPENAI_BASE_URL) for a local OpenAI-compatible server"
    )

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
        self.name = name  # "openai-compatible" shares the wire format, not the key
        super().__init__(model, http=http, base_url=base_url, api_key=api_key, timeout=timeout)
        self.api: Api = api or ("completions" if _COMPLETION_ONLY.search(model) else "chat")
        # Flips to False the first time a server answers fewer choices than `n` asked for.
        self.n_supported = True

    def key_hint(self) -> str:
        hint = super().key_hint()
        if self.name != "openai":  # openai-compatible/ sends no key from the environment
            hint += f" and use openai/{self.model}, which sends it"
        return hint

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def identity_extra(self) -> dict[str, Any]:
        return {"api": self.api}

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
        resp = await self.post(path, self._body(request))
        if resp.status >= 300:
            raise self.failure(resp)
        completion = self._parse(resp.body, self.where)
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
