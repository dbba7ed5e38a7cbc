from __future__ import annotations

import pytest

from opro.engine.dedup import canonicalize, dedupe, seen_filter


@pytest.mark.parametrize(
    ("raw", "canon"),
    [
        ("let's think step by step.", "Let's think step by step."),
        ("  Let's think   step by\nstep.  ", "Let's think step by step."),
        ("**Solve** the problem.", "Solve the problem."),
        ("", ""),
        ("   ", ""),
        ("1. first", "1. first"),
    ],
)
def test_canonicalize(raw: str, canon: str) -> None:
    assert canonicalize(raw) == canon


def test_dedupe_keeps_first_seen_order_and_merges_only_identical_prompts() -> None:
    unique, index = dedupe(["b thing", "A", "b thing", "", "  ", "a", "**b** thing", "A"])
    # Case, `**` and whitespace change the prompt sent, so they are different instructions;
    # every blank instruction places nothing and is the one empty instruction.
    assert unique == ["b thing", "A", "", "a", "**b** thing"]
    assert index == [0, 1, 0, 2, 2, 3, 4, 1]


def test_seen_filter_drops_what_history_already_holds() -> None:
    seen = {"Old one"}
    assert seen_filter(["old one", "new one", "New  one"], seen) == ["New one"]
    assert seen == {"Old one", "New one"}
