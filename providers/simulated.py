"""`simulated/<name>`: a deterministic in-process model for tests and offline examples.

Its answer is a pure function of (name, prompt): a hash picks one of the answer shapes the
prompt invites (True/False, yes/no, valid/invalid, an option letter, or a number taken
from the prompt). Accuracy therefore moves with the instruction like a weak model's does,
without a network, a key or a GPU. Latency is simulated with the event loop's clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from opro.checks import DELAY_SECONDS
from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage

_OPTION = re.compile(r"^\(?([A-R])\)", re.MULTILINE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PAIRS = (("True", "False"), ("Yes", "No"), ("valid", "invalid"))


class SimulatedProvider(Provider):
    name = "simulated"

    def __init__(self, model: str, *, latency_s: float = 0.0) -> None:
        super().__init__(model)
        self.latency_s = DELAY_SECONDS.check("latency_s", latency_s)

    def connection_key(self) -> str:
        return f"simulated|{self.model}"

    def answer(self, prompt: str, sample: int = 0) -> str:
        digest = hashlib.sha256(f"{self.model}\x00{sample}\x00{prompt}".encode()).digest()
        pick = int.from_bytes(digest[:8], "big")
        question = prompt.rsplit("A:", 1)[0]
        for yes, no in _PAIRS:
            if re.search(rf"\b({yes}|{no})\b", question, re.IGNORECASE):
                return f"The answer is {yes if pick % 2 else no}."
        letters = _OPTION.findall(question)
        if letters:
            return f"The answer is ({letters[pick % len(letters)]})."
        numbers = _NUMBER.findall(question)
        if numbers:
            return f"The answer is {numbers[pick % len(numbers)]}."
        return "I do not know."

    async def complete(self, request: Request) -> Completion:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        text = request.as_text()
        seed = request.seed or 0
        texts = tuple(self.answer(text, seed + i) for i in range(request.n))
        for stop in request.stop:
            texts = tuple(t.split(stop, 1)[0] for t in texts)
        usage = Usage(max(1, len(text) // 4), sum(max(1, len(t) // 4) for t in texts))
        return Completion(texts=texts, usage=usage, finish_reasons=("stop",) * len(texts))

    @property
    def supports_n(self) -> bool:
        return True

    def cache_identity(self) -> dict[str, Any]:
        return {"model": self.spec}
