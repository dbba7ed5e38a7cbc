"""Models with KNOWN per-instruction accuracies, for racing's tests and `benchmarks/racing.py`.

Every instruction has a latent accuracy `latent_accuracy(text)`, uniform in [LOW, HIGH] from
its sha256, and answers a question right when a second hash of (instruction, question) falls
below it: the accuracy on a fixed training set is therefore a known, deterministic number
(`true_accuracy`), while which examples are right looks random, as racing assumes.

* `responder(prompt)` plays both models on the fake OpenAI server: a meta-prompt (the
  instruction-tuned style) gets `PROPOSALS` bracketed instructions drawn from the prompt's
  hash (so every step proposes new ones and a rerun proposes the same ones); a scorer prompt
  (`{instruction}\\n{question}`, the default position without framing) is answered right or
  wrong as above. `python -m opro.testing.known_accuracy` serves it (READY <base url>; `serve`).
* `KnownAccuracyProvider` answers with `responder` in-process: a `Model` of it runs the
  engine's whole path (cache, single-flight, budget) without a network. (`benchmarks/racing.py`
  also scores by the same rule without the engine, for runs over many seeds.)
* `parity_task(path, n)` writes the task file both use.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opro.providers.base import Provider
from opro.providers.types import Completion, Request, Usage
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, serve_until_signalled

LOW, HIGH = 0.2, 0.9
PROPOSALS = 8
META_MARK = "Write the text in square brackets."
QUESTION_MARK = "Question "
WORDS = (
    "think", "carefully", "check", "parity", "count", "pairs", "answer", "briefly", "halve",
    "recall", "even", "odd", "trust", "instinct", "verify", "twice", "look", "closely",
    "decide", "quickly", "reason", "aloud", "focus", "digits", "consider", "rules",
)  # fmt: skip


def _unit(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def latent_accuracy(instruction: str, spread: tuple[float, float] = (LOW, HIGH)) -> float:
    low, high = spread
    return low + (high - low) * _unit("accuracy", instruction)


def answers_right(
    instruction: str, question: str, spread: tuple[float, float] = (LOW, HIGH)
) -> bool:
    return _unit("right", instruction, question) < latent_accuracy(instruction, spread)


def true_accuracy(instruction: str, questions: Sequence[str]) -> float:
    """The instruction's exact accuracy on `questions` (every answer graded)."""
    return sum(answers_right(instruction, q) for q in questions) / len(questions)


def proposals(prompt: str, k: int = PROPOSALS) -> list[str]:
    """k instructions drawn from the meta-prompt's hash: 3 to 5 words, capitalised."""
    out = []
    for i in range(k):
        digest = hashlib.sha256(f"{i}\x00{prompt}".encode()).digest()
        words = [WORDS[b % len(WORDS)] for b in digest[1 : 4 + digest[0] % 3]]
        out.append(" ".join(words).capitalize() + ".")
    return out


def responder(prompt: str) -> str:
    if META_MARK in prompt:
        return "Here are some: " + " ".join(f"[{p}]" for p in proposals(prompt))
    head, sep, tail = prompt.rpartition(QUESTION_MARK)
    if not sep:
        return "I do not know."
    question = QUESTION_MARK + tail
    n = int(tail.split(":", 1)[0])
    right = "yes" if n % 2 == 0 else "no"
    wrong = "no" if right == "yes" else "yes"
    return right if answers_right(head.rstrip("\n"), question) else wrong


def parity_rows(n: int) -> list[dict[str, str]]:
    return [
        {"input": f"{QUESTION_MARK}{i}: is {i} even?", "target": "yes" if i % 2 == 0 else "no"}
        for i in range(n)
    ]


def parity_task(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in parity_rows(n)))
    return path


class KnownAccuracyProvider(Provider):
    """`responder` in-process; `calls` counts the requests it answered."""

    name = "known"

    def __init__(self, model: str = "accuracy") -> None:
        super().__init__(model)
        self.calls = 0

    async def complete(self, request: Request) -> Completion:
        self.calls += 1
        text = responder(request.as_text())
        out = min(request.max_tokens, max(1, len(text) // 4))
        usage = Usage(max(1, len(request.as_text()) // 4), request.n * out)
        return Completion((text,) * request.n, usage, ("stop",) * request.n)

    @property
    def supports_n(self) -> bool:
        return True

    def cache_identity(self) -> dict[str, Any]:
        return {"model": self.spec}


async def serve(argv: list[str]) -> int:
    """The server process. `--hang-in-step S --after A`: after the A-th scorer answer of step
    S, the next request is held forever, so a test can kill a run at a known point mid-step
    (with `--max-concurrency 1` nothing answered is left unrecorded)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang-in-step", type=int, default=None)
    parser.add_argument("--after", type=int, default=1)
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(FakeServerConfig(responder=responder))
    metas = scored = 0

    def hanging(prompt: str) -> str:
        nonlocal metas, scored
        if META_MARK in prompt:
            metas += 1
        elif metas == args.hang_in_step:
            scored += 1
            if scored == args.after:
                server.inject("hang", 1)
        return responder(prompt)

    server.config.responder = hanging
    return await serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(sys.argv[1:])))
