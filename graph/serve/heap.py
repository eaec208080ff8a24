"""Gives glibc's free heap pages back to the system on an interval, so a
replica's RSS follows what it holds rather than what its allocator keeps.

Torch's variously sized buffers, freed on many threads, leave free memory
inside glibc's arenas that RSS keeps counting (the embedder in one process
grew from 593 to 975 MiB over 1,200 batches, and ended at 606 MiB with this
trimmer: load_tests/README.md, "Soak"). One call a minute costs about a
millisecond; `RAGSERVE_MALLOC_TRIM_S=0` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("ragserve.heap")

ENV = "RAGSERVE_MALLOC_TRIM_S"
DEFAULT_INTERVAL_S = 60.0

_started: threading.Thread | None = None
_lock = threading.Lock()


def interval_s() -> float:
    """The trim interval from `RAGSERVE_MALLOC_TRIM_S` (0 or less: off).

    Raises:
        ValueError: the variable is set but not a number (named in the message).
    """
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{ENV} must be seconds (a number), got {raw!r}") from None


def malloc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)`, or None where the C library has none (musl,
    macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


def start_heap_trimmer(every_s: float | None = None) -> threading.Thread | None:
    """Start this process's trimmer thread (once; later calls return it).

    Returns:
        The daemon thread, or None when trimming is off or unavailable.
    """
    global _started
    every = interval_s() if every_s is None else every_s
    trim = malloc_trim()
    if every <= 0 or trim is None:
        return None
    with _lock:
        if _started is None:
            _started = threading.Thread(
                target=_trim_forever, args=(trim, every), name="heap-trim", daemon=True
            )
            _started.start()
        return _started


def _trim_forever(trim: Callable[[], int], every_s: float) -> None:
    while True:
        time.sleep(every_s)
        started = time.perf_counter()
        try:
            trim()
        except Exception:  # never take the replica down for this
            logger.exception("malloc_trim failed; the trimmer stops")
            return
        logger.debug("malloc_trim took %.1f ms", (time.perf_counter() - started) * 1e3)
