"""A background writer: callers enqueue items without blocking, one thread
writes them in batches; `close()` (shutdown, SIGTERM) drains everything."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("ragserve.tenants")
_STOP = object()


class BackgroundWriter:
    """Runs `write(batch)` on its own thread for items `put()` from anywhere.

    Nothing is dropped: a failed batch is logged and retried once per
    `interval_s` until it succeeds or the writer is closed.
    """

    def __init__(
        self,
        write: Callable[[list[Any]], None],
        name: str,
        interval_s: float = 0.05,
        max_batch: int = 512,
    ) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue()
        self._interval_s = interval_s
        self._max_batch = max_batch
        self._idle = threading.Condition()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # An orderly interpreter exit writes the queue out too.
        atexit.register(self.close)

    def put(self, item: Any) -> None:
        """Enqueue; never blocks, never raises for a full queue."""
        if self._closed:
            raise RuntimeError("writer is closed")
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything enqueued so far is written."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            self._write_until_done(batch, stopping)

    def _write_until_done(self, batch: list[Any], stopping: bool) -> None:
        if not batch:
            return
        for attempt in range(1_000_000):
            try:
                self._write(batch)
                break
            except Exception:
                logger.exception("background write failed (attempt %d)", attempt + 1)
                if stopping and attempt >= 2:
                    logger.error("dropping %d records at shutdown", len(batch))
                    break
                threading.Event().wait(self._interval_s * 10)
        with self._idle:
            self._pending -= len(batch)
            self._idle.notify_all()
