"""Write-behind for a result cache: stores land in one worker thread, in submission order.

A SQLite write (a transaction, a WAL append, sometimes a checkpoint, a wait for another
process's lock) takes from tens of microseconds to seconds; on the event loop it would hold
up every call in flight. So `submit` only records the result in `pending` (a dict the cache
consults on every read, which gives read-your-writes at once) and queues it; one thread per
cache lets results gather for `LINGER_S` after the first one, then hands them to the
cache's `store` function as one batch (one transaction instead of one per result). A
result leaves `pending` only after `store` has returned, by which time it is readable from
the database or kept in memory.

`flush` cuts the linger short and blocks until everything submitted so far has been
through `store` (async code calls it through `asyncio.to_thread`); `close` flushes and
stops the thread; an interpreter that exits without closing the cache flushes it in an
`atexit` hook. A kill -9 loses only what was still queued (at most about `LINGER_S` of
results): each batch is one SQLite transaction, so never half a value.
"""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable

from opro.providers.types import Completion

log = logging.getLogger("opro.cache")

Batch = list[tuple[str, Completion]]
# Results written in one transaction at most; a larger backlog is written in several.
MAX_BATCH = 512
# How long the thread lets results gather after the first one before it writes them. A
# commit costs about five inserts of a result (~100 vs ~20 us of CPU here), so at a few
# hundred results/s batching halves the CPU a result costs to store; reads never wait for
# it (`pending`), `flush` cuts it short, and a kill -9 loses at most this much.
LINGER_S = 0.05


class WriteBehind:
    """A queue of results and the thread that passes them, in batches, to `store`."""

    def __init__(
        self,
        store: Callable[[Batch], None],
        *,
        on_thread_exit: Callable[[], None] = lambda: None,
        name: str = "opro-cache-writer",
        linger: float = LINGER_S,
    ) -> None:
        self.pending: dict[str, Completion] = {}  # submitted, not yet stored: read these
        self._store = store
        self._on_thread_exit = on_thread_exit  # runs in the thread (its SQLite connection)
        self._name = name
        self._linger = linger
        self._hurry = threading.Event()  # set by flush and close: write without lingering
        self._queue: queue.SimpleQueue[tuple[str, Completion] | None] = queue.SimpleQueue()
        self._done = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self._thread: threading.Thread | None = None
        self._exit_hook: Callable[[], None] | None = None

    def submit(self, key: str, completion: Completion) -> None:
        """Queue a result; it is readable from `pending` until it has been stored."""
        with self._done:
            self.pending[key] = completion
            self._submitted += 1
            if self._thread is None:
                self._start()
        self._queue.put((key, completion))

    def unwritten(self) -> int:
        """Results submitted but not yet through `store`."""
        return self._submitted - self._finished

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every result submitted so far has been through `store`, or for at
        most `timeout` seconds; True when nothing submitted before the call is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            target = self._submitted
            thread = self._thread
            if self._finished < target:
                self._hurry.set()
            while self._finished < target and thread is not None and thread.is_alive():
                if deadline is None:
                    self._done.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._done.wait(left)
            return self._finished >= target

    def close(self) -> None:
        """Flush, then stop the thread; a later `submit` starts a new one."""
        with self._done:
            thread, self._thread = self._thread, None
            hook, self._exit_hook = self._exit_hook, None
        if hook is not None:
            atexit.unregister(hook)
        if thread is not None:
            self._queue.put(None)  # after everything queued so far: the thread drains first
            self._hurry.set()
            thread.join()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread = thread
        # Daemon, so a program that never closes its cache can still exit; the hook writes
        # what is queued before the interpreter stops daemon threads.
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                batch: Batch = []
                stop = item is None
                if item is not None:
                    batch.append(item)
                    self._hurry.wait(self._linger)  # let a batch gather (see LINGER_S)
                    self._hurry.clear()  # a flush from now on cuts the next linger short
                while not stop and len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                    else:
                        batch.append(item)
                if batch:
                    self._write(batch)
                if stop:
                    return
        finally:
            try:
                self._on_thread_exit()
            finally:
                with self._done:
                    self._done.notify_all()  # nobody may wait for a thread that has gone

    def _write(self, batch: Batch) -> None:
        stored = True
        try:
            self._store(batch)
        except Exception:  # a bug in `store`: keep the results readable from memory
            stored = False
            log.exception("cache writer: %d results could not be stored", len(batch))
        with self._done:
            if stored:
                for key, completion in batch:
                    if self.pending.get(key) is completion:  # not resubmitted meanwhile
                        del self.pending[key]
            self._finished += len(batch)
            self._done.notify_all()


def _close_at_exit(ref: weakref.ref[WriteBehind]) -> None:
    writer = ref()
    if writer is not None:
        writer.close()
