"""The write-behind queue on its own: batches in order, flush never waits for the linger,
a failing store keeps its results readable."""

from __future__ import annotations

import logging
import threading

import pytest

from opro.caches.writer import Batch, WriteBehind
from opro.providers.types import Completion, Usage

HOUR = 3600.0  # a linger no test could wait out: flush and close must cut it short


def completion(i: int) -> Completion:
    return Completion((f"answer {i}",), Usage(1, 1))


def test_flush_cuts_the_linger_short_and_batches_keep_their_order() -> None:
    batches: list[Batch] = []
    threads: set[int] = set()

    def store(batch: Batch) -> None:
        threads.add(threading.get_ident())
        batches.append(batch)

    writes = WriteBehind(store, linger=HOUR)
    for i in range(10):
        writes.submit(f"k{i}", completion(i))
    writes.flush()
    assert writes.unwritten() == 0 and writes.pending == {}
    writes.submit("k0", completion(99))  # a second value for a key goes after the first
    writes.close()
    stored = [item for batch in batches for item in batch]
    assert stored == [(f"k{i}", completion(i)) for i in range(10)] + [("k0", completion(99))]
    assert threading.get_ident() not in threads


def test_a_store_that_fails_keeps_its_results_readable(caplog: pytest.LogCaptureFixture) -> None:
    def store(batch: Batch) -> None:
        raise RuntimeError("a bug in the store")

    writes = WriteBehind(store, linger=HOUR)
    with caplog.at_level(logging.ERROR, logger="opro.cache"):
        writes.submit("k", completion(1))
        writes.flush()
    assert writes.unwritten() == 0 and writes.pending == {"k": completion(1)}
    assert "could not be stored" in caplog.text
    writes.close()
