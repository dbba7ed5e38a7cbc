"""Models with KNOWN per-instruction accuracies, for racing's tests and `benchmarks/racing.py`.

Every instruction has a latent accuracy `latent_accuracy(text)`, uniform in [LOW, HIGH] from
its sha256, and answers a question right when a second hash of (instruction, question) falls
below it: the accuracy on a fixed training set is therefore a known, deterministic number
(`true_accuracy`), while which examples are right looks random, as racing assumes.

* `responder(prompt)` plays both models on the fake OpenAI server: a meta-prompt (the
  instruction-tuned style) gets `PROPOSALS` bracketed instructions drawn from the prompt's
  hash (so every step proposes new ones and a rerun proposes the same ones); a scorer prompt
  (`{instruction}\\n{question}`, the default position without framing) is answered right or
  wrong as above. `python -m opro.testing.known_accuracy` serves it (READY <base url>).
* `KnownAccuracyProblem` is a `PromptProblem` scored in-process by the same rule (no engine
  call, `pairs` counts the pairs scored), for runs over many seeds.
* `parity_task(path, n)` writes the task file both use.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from opro.engine.spend import Spend
from opro.optimize.problem import PromptProblem, SolutionScore, SplitName
from opro.tasks.types import Example
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, serve_until_signalled

LOW, HIGH = 0.2, 0.9
PROPOSALS = 8
META_MARK = "Write the text in square brackets."
QUESTION_MARK = "Question "
_WORDS = (
    "think", "carefully", "check", "parity", "count", "pairs", "answer", "briefly", "halve",
    "recall", "even", "odd", "trust", "instinct", "verify", "twice", "look", "closely",
    "decide", "quickly", "reason", "aloud", "focus", "digits", "consider", "rules",
)  # fmt: skip


def _unit(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def latent_accuracy(instruction: str) -> float:
    return LOW + (HIGH - LOW) * _unit("accuracy", instruction)


def answers_right(instruction: str, question: str) -> bool:
    return _unit("right", instruction, question) < latent_accuracy(instruction)


def true_accuracy(instruction: str, questions: Sequence[str]) -> float:
    """The instruction's exact accuracy on `questions` (every answer graded)."""
    return sum(answers_right(instruction, q) for q in questions) / len(questions)


def proposals(prompt: str, k: int = PROPOSALS) -> list[str]:
    """k instructions drawn from the meta-prompt's hash: 3 to 5 words, capitalised."""
    out = []
    for i in range(k):
        digest = hashlib.sha256(f"{i}\x00{prompt}".encode()).digest()
        words = [_WORDS[b % len(_WORDS)] for b in digest[1 : 4 + digest[0] % 3]]
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


class KnownAccuracyProblem(PromptProblem):
    """A `PromptProblem` whose scorer is `answers_right`, computed here: no call is made."""

    pairs = 0

    async def _score_on(
        self,
        solutions: Sequence[str],
        examples: Sequence[Example],
        split: SplitName,
        indices: Sequence[int] | None = None,
    ) -> list[SolutionScore]:
        out = []
        for solution in solutions:
            wrong = [
                i if indices is None else indices[i]
                for i, ex in enumerate(examples)
                if not answers_right(solution, ex.input)
            ]
            n = len(examples)
            correct = n - len(wrong)
            self.pairs += n
            out.append(
                SolutionScore(
                    score=correct / n,
                    spend=Spend(calls=n),
                    detail={
                        "correct": correct,
                        "correct_reference": correct,
                        "graded": n,
                        "n": n,
                        **({"wrong": sorted(wrong)} if split == "train" else {}),
                    },
                    by_grading={"strict": correct / n, "reference": correct / n},
                )
            )
        return out


async def _serve() -> int:
    return await serve_until_signalled(FakeOpenAIServer(FakeServerConfig(responder=responder)))


if __name__ == "__main__":
    sys.exit(asyncio.run(_serve()))
