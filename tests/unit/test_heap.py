"""The heap trimmer: its interval from the environment, glibc's call, one
thread per process."""

from __future__ import annotations

import ctypes

import pytest

from graph.serve import heap


def test_interval_defaults_reads_and_refuses_junk(monkeypatch):
    monkeypatch.delenv(heap.ENV, raising=False)
    assert heap.interval_s() == heap.DEFAULT_INTERVAL_S
    monkeypatch.setenv(heap.ENV, "2.5")
    assert heap.interval_s() == 2.5
    monkeypatch.setenv(heap.ENV, "soon")
    with pytest.raises(ValueError, match="RAGSERVE_MALLOC_TRIM_S must be seconds"):
        heap.interval_s()


def test_off_starts_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_started", None)
    monkeypatch.setenv(heap.ENV, "0")
    assert heap.start_heap_trimmer() is None
    assert heap._started is None


def test_trim_gives_freed_heap_back(monkeypatch):
    trim = heap.malloc_trim()
    if trim is None:
        pytest.skip("this C library has no malloc_trim")
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # Many small blocks (below the mmap threshold) stay in the heap when freed.
    blocks = [libc.malloc(4096) for _ in range(50_000)]
    for block in blocks:
        ctypes.memset(block, 1, 4096)  # touched: counted in RSS
    top = libc.malloc(64)  # held above them: free() alone cannot shrink the heap
    before = _rss_kib()
    for block in blocks:
        libc.free(block)
    assert _rss_kib() > before - 100_000  # freed, yet still counted
    trim()
    assert _rss_kib() < before - 100_000  # ~200 MiB given back
    libc.free(top)


def test_one_thread_per_process(monkeypatch):
    monkeypatch.setattr(heap, "_started", None)
    first = heap.start_heap_trimmer(3600)
    if first is None:
        pytest.skip("this C library has no malloc_trim")
    assert first.daemon and first.is_alive()
    assert heap.start_heap_trimmer(3600) is first


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
