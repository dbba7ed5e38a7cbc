"""`opro optimize --strategy evoprompt-de` and `opro sweep --strategy evoprompt-ga` over real
HTTP, scorer and optimizer both on a fake server.

The fake server runs in a subprocess (this file is its entry point: `python <this file>`).
Its responder plays the optimizer for EvoPrompt's prompts (they ask for a prompt between
<prompt> tags): the answer is a tagged instruction picked by a hash of the prompt, or, for
one prompt in seven, an answer with no tag. Scorer prompts ("Is N even?") are answered
right when the instruction mentions parity, and "Yes" otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opro.cli.main import main
from opro.testing.fake_openai import FakeOpenAIServer, FakeServerConfig, serve_until_signalled
from opro.testing.process import ServerProcess

POOL = [
    "Use parity rules.",
    "Think carefully.",
    "Decide quickly.",
    "Check the parity of the number.",
    "Answer yes or no.",
    "Count in pairs.",
    "Be brief.",
]
_QUESTION = re.compile(r"Is (\d+) even\?")


def answer(prompt: str) -> str:
    if "</prompt>" in prompt:
        h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
        if h % 7 == 0:
            return "I would rather not."
        return f"Step 1: done.\nFinal prompt: <prompt>{POOL[h % len(POOL)]}</prompt>"
    match = _QUESTION.search(prompt)
    if match is None:
        return "I do not know."
    right = "Yes" if int(match.group(1)) % 2 == 0 else "No"
    return f"The answer is {right if 'parity' in prompt else 'Yes'}."


async def serve() -> int:
    return await serve_until_signalled(FakeOpenAIServer(FakeServerConfig(responder=answer)))


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))


# -- tests ---------------------------------------------------------------------------------


class Server(ServerProcess):
    def __init__(self) -> None:
        super().__init__(command=[sys.executable, __file__])


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def task(tmp_path: Path) -> Path:
    path = tmp_path / "parity.jsonl"
    rows = [{"input": f"Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def models(base_url: str) -> list[str]:
    return [
        "--scorer", "openai/fake-model", "--scorer-base-url", base_url,
        "--optimizer", "openai/fake-model", "--optimizer-base-url", base_url,
        "--train-fraction", "0.4", "--test-limit", "6",
    ]  # fmt: skip


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_optimize_with_differential_evolution(
    server: Server, task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    args = ["optimize", "--task", str(task), *models(server.base_url), "--steps", "4"]
    args += ["--strategy", "evoprompt-de", "--population", "4", "--start", "Be brief."]
    args += ["--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    steps = records(run_dir / "steps.jsonl")
    assert [r["step"] for r in steps] == [0, 1, 2, 3, 4]
    start = steps[0]
    assert start["candidates"][0] == {**start["candidates"][0], "status": "start"}
    assert start["candidates"][0]["canonical"] == "Be brief."
    assert len(start["population"]) == 4 and "Input: Is" in start["meta_prompts"][0]
    scores = {c["canonical"]: c["score"] for r in steps for c in r["candidates"] if "score" in c}
    for before, after in itertools.pairwise(steps):
        assert len(after["answers"]) == 4 and after["asks"] == 4
        for old, new in zip(before["population"], after["population"], strict=True):
            assert scores[new] >= scores[old]  # DE never keeps a worse prompt
    failures = sum(r.get("extraction_failures", 0) for r in steps)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["extraction_failures"] == failures
    assert results["best"]["score"] == 1.0 and "parity" in results["best"]["solution"]
    assert "top 1" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["options"]["strategy"] == "evoprompt-de"
    assert config["run"]["options"]["population"] == 4
    # Every instruction was scored once: the server answered each scorer prompt once.
    counts = server.stats(prompts=True)["prompt_counts"]
    assert max(n for p, n in counts.items() if "</prompt>" not in p) == 1
    # Resuming the finished run with another strategy is refused; the same one pays nothing.
    resume = [*args, "--resume"]
    code = main([a if a != "evoprompt-de" else "evoprompt-ga" for a in resume])
    assert code == 2 and "strategy" in capsys.readouterr().err
    before = server.stats()["requests_total"]
    assert main(resume) == 0
    assert server.stats()["requests_total"] == before


def test_sweep_with_the_genetic_algorithm(
    server: Server, task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "--tasks", str(task), *models(server.base_url), "--steps", "2"]
    args += ["--strategy", "evoprompt-ga", "--candidates-per-step", "3"]
    args += ["--run-dir", str(sweep_dir), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0, capsys.readouterr().err
    stored = json.loads((sweep_dir / "sweep.json").read_text())
    assert stored["settings"]["optimize"]["strategy"] == "evoprompt-ga"
    [task_dir] = [p for p in sweep_dir.iterdir() if (p / "steps.jsonl").exists()]
    steps = records(task_dir / "steps.jsonl")
    assert [r["step"] for r in steps] == [0, 1, 2]
    assert all(len(r["population"]) == 3 for r in steps)
    assert all(len(r["parents"]) == 3 for r in steps[1:])


def test_population_without_an_evoprompt_strategy_is_one_line(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["optimize", "--task", str(task), "--population", "4", "--dry-run"]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--population" in err and "--strategy" in err


def test_population_without_an_evoprompt_strategy_is_one_line_in_a_sweep(
    task: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "--tasks", str(task), "--population", "4", "--steps", "1"]
    args += ["--scorer", "simulated/s", "--optimizer", "simulated/o"]
    assert main([*args, "--run-dir", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--population" in err and "--strategy" in err
    assert not (tmp_path / "sweep").exists()
