"""Per-request batch accounting on top of `ray.serve.batch`.

A request enters the batch queue wrapped with its enqueue time; the batch
handler unwraps the batch, runs it, and hands every caller its result together
with the size of the batch it landed in and how long it waited for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Queued(Generic[T]):
    """A request payload and when it entered the batch queue."""

    payload: T
    enqueued_at: float
    #: Wall clock (ns) at enqueue, to draw the wait as a span.
    enqueued_wall_ns: int = 0

    @classmethod
    def now(cls, payload: T) -> Queued[T]:
        return cls(payload, time.perf_counter(), time.time_ns())


@dataclass(frozen=True)
class BatchInfo:
    """What one request saw of batching."""

    size: int
    wait_ms: float
    run_ms: float
    enqueued_wall_ns: int = 0

    @property
    def batch_start_ns(self) -> int:
        return self.enqueued_wall_ns + int(self.wait_ms * 1e6)

    @property
    def batch_end_ns(self) -> int:
        return self.batch_start_ns + int(self.run_ms * 1e6)


@dataclass(frozen=True)
class Batched(Generic[R]):
    """A request's result (or the error its own input raised) and its batch info."""

    result: R | None
    info: BatchInfo
    error: BaseException | None = None

    def value(self) -> R:
        """The result, or this request's own error raised."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


def run_batch(
    items: Sequence[Queued[T]],
    fn: Callable[[list[T]], list[R]],
) -> list[Batched[R]]:
    """Run `fn` over the payloads of one batch and attach batch info.

    `fn` runs right here, on the caller's event loop, on purpose: requests
    that arrive while it runs queue up in `ray.serve.batch` and form the next
    batch, so with a zero batch window a lone request never waits and a busy
    model still gets full batches (TEI's way). In a thread instead, the batch
    loop would cut a batch of one for every arrival while the model is busy.

    Args:
        items: the batch as `ray.serve.batch` handed it over.
        fn: computes one result per payload, in order (blocking).

    Returns:
        One `Batched` per item, in order.
    """
    started = time.perf_counter()
    payloads = [item.payload for item in items]
    errors: list[BaseException | None] = [None] * len(items)
    try:
        results: list[R | None] = list(fn(payloads))
    except Exception:
        if len(items) == 1:
            raise
        # One bad input must not fail the requests that shared its batch:
        # run each alone, so only the culprit gets the error.
        results, errors = _one_by_one(fn, payloads)
    if len(results) != len(items):
        raise RuntimeError(
            f"batch function returned {len(results)} results for {len(items)} items"
        )
    run_ms = (time.perf_counter() - started) * 1000.0
    return [
        Batched(
            result,
            BatchInfo(
                size=len(items),
                wait_ms=(started - item.enqueued_at) * 1000.0,
                run_ms=run_ms,
                enqueued_wall_ns=item.enqueued_wall_ns,
            ),
            error,
        )
        for item, result, error in zip(items, results, errors, strict=True)
    ]


def _one_by_one(
    fn: Callable[[list[T]], list[R]], payloads: list[T]
) -> tuple[list[R | None], list[BaseException | None]]:
    results: list[R | None] = []
    errors: list[BaseException | None] = []
    for payload in payloads:
        try:
            (result,) = fn([payload])
            results.append(result)
            errors.append(None)
        except Exception as exc:
            results.append(None)
            errors.append(exc)
    return results, errors


class BatchLog:
    """The most recent batch infos of one node, for stats and tests."""

    def __init__(self, maxlen: int = 4096) -> None:
        self._infos: deque[BatchInfo] = deque(maxlen=maxlen)

    def record(self, info: BatchInfo) -> None:
        self._infos.append(info)

    def summary(self) -> dict[str, Any]:
        """Counts and the per-request batch sizes and waits seen so far."""
        infos = list(self._infos)
        return {
            "requests": len(infos),
            "batch_sizes": [i.size for i in infos],
            "wait_ms": [round(i.wait_ms, 3) for i in infos],
            "max_batch_size_seen": max((i.size for i in infos), default=0),
        }
