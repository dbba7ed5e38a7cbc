"""How much signal the embedded SmolLM2-135M gives an optimizer on boolean expressions.

OPRO needs a scorer whose accuracy moves with the instruction. This script scores a handful
of instructions on the training split of `synthetic/boolean_expressions` (40 examples by
default) with `local/smollm2-135m`, for every instruction position, both ways of talking to
the model (a raw completion of the paper's `Q: ...\\n\\nA:` text, or that text as one chat
turn) and two stop settings, through the real pipeline (`opro.Engine`, a temporary cache,
the task grader). Each cell is accuracy % / parseable % (an answer `extract_boolean` can
read); `spread` is the best minus the worst accuracy of the row: the optimizer's signal.
Runs offline; about 6 minutes on 2 cores (2,560 calls of ~130 ms).

Usage: python benchmarks/embedded_model.py [--examples 40] [--max-tokens 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson

import opro
from opro.tasks import GRADING_VERSION, grade, load_task, split
from opro.tasks.grading import extract_boolean
from opro.tasks.prompts import Position

INSTRUCTIONS = (
    "",
    "Let's think step by step.",
    "Answer True or False.",
    "The answer is",
    "Evaluate the boolean expression, then answer True or False.",
    "Is the following expression True or False?",
)
POSITIONS: tuple[Position, ...] = ("Q_begin", "Q_end", "A_begin")
MODES = ("completions", "chat")
STOPS: tuple[tuple[str, ...], ...] = ((), ("\n",))


@dataclass
class CountingGrader:
    """The task grader, also counting outputs that hold a readable True/False at all."""

    version: str = GRADING_VERSION
    seen: int = 0
    parseable: int = 0

    def __call__(self, prediction: str, example: opro.Example) -> bool:
        self.seen += 1
        self.parseable += extract_boolean(prediction, "boolean") is not None
        return grade(prediction, example.target, question=example.input)


@dataclass
class Cell:
    mode: str
    stop: tuple[str, ...]
    position: str
    instruction: str
    correct: int
    n: int
    parseable: int
    errors: int


async def measure(examples: tuple[opro.Example, ...], max_tokens: int) -> tuple[list[Cell], int]:
    cells: list[Cell] = []
    calls = 0
    with tempfile.TemporaryDirectory() as cache_dir:
        async with opro.Engine(cache_dir=Path(cache_dir)) as engine:
            for mode in MODES:
                for stop in STOPS:
                    model = engine.model(
                        "local/smollm2-135m",
                        decoding=opro.Decoding(max_tokens=max_tokens, stop=stop),
                        api=mode,
                    )
                    for position in POSITIONS:
                        for instruction in INSTRUCTIONS:  # one at a time: one grader each
                            grader = CountingGrader()
                            report = await engine.evaluate(
                                [instruction], examples, model, grader=grader,
                                position=position, qa_framing=True,  # as measured
                            )  # fmt: skip
                            score = report.instructions[0]
                            cells.append(
                                Cell(mode, stop, position, instruction, score.correct,
                                     score.n, grader.parseable, score.errors)
                            )  # fmt: skip
                    calls += model.stats.calls
    return cells, calls


def table(cells: list[Cell]) -> str:
    heads = ["mode", "stop", "position", *(f"I{i}" for i in range(len(INSTRUCTIONS))), "spread"]
    rows: list[list[str]] = []
    for mode in MODES:
        for stop in STOPS:
            for position in POSITIONS:
                row = [c for c in cells if (c.mode, c.stop, c.position) == (mode, stop, position)]
                accs = [100 * c.correct / c.n for c in row]
                rows.append(
                    [mode, repr("".join(stop)) if stop else "-", position]
                    + [
                        f"{a:3.0f}/{100 * c.parseable / c.n:3.0f}"
                        for a, c in zip(accs, row, strict=True)
                    ]
                    + [f"{max(accs) - min(accs):.0f}"]
                )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write every cell here")
    args = parser.parse_args()
    train = split(load_task("synthetic/boolean_expressions")).train[: args.examples]
    started = time.perf_counter()
    cells, calls = asyncio.run(measure(train, args.max_tokens))
    wall = time.perf_counter() - started
    targets = Counter(e.target for e in train)
    print(f"{len(train)} training examples of synthetic/boolean_expressions, targets {targets}")
    print(f"max_tokens={args.max_tokens}; cells: accuracy % / parseable %; errors: "
          f"{sum(c.errors for c in cells)}")  # fmt: skip
    for i, ins in enumerate(INSTRUCTIONS):
        print(f"  I{i} = {ins!r}")
    print(table(cells))
    print(f"{calls} llama.cpp calls in {wall:.0f} s ({1000 * wall / max(calls, 1):.0f} ms/call)")
    if args.json:
        args.json.write_bytes(orjson.dumps([c.__dict__ for c in cells], option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
