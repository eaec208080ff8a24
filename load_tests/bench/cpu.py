"""CPU-seconds of a server: every process it started, read from /proc (P6).

Knows /proc's `stat` and `cmdline` and how Ray titles its Serve replicas
(`ray::ServeReplica:<app>:<deployment>`), so the CPU of one graph variant can
be told from the others running in the same Ray; knows nothing of HTTP.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    title: str
    cpu_s: float


def read_procs() -> dict[int, Proc]:
    """Every live process: parent, title and user+system CPU so far."""
    procs: dict[int, Proc] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])
        title = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        procs[int(entry.name)] = Proc(
            int(entry.name), int(fields[1]), title, (utime + stime) * _TICK_S
        )
    return procs


def replica_app(title: str) -> str | None:
    """The Serve app a Ray replica process serves, from its title."""
    marker = "ServeReplica:"
    at = title.find(marker)
    if at < 0:
        return None
    return title[at + len(marker) :].split(":", 1)[0]


def tree_cpu_s(root: int, other_apps: frozenset[str] = frozenset()) -> float:
    """CPU-seconds of `root` and all its descendants so far.

    Args:
        root: the server's process id.
        other_apps: Serve apps in the same Ray that are not being measured:
            their replicas (and what those started, e.g. a vLLM engine core)
            are left out; the processes every app shares (raylet, GCS, the
            Serve controller and proxy) count fully.
    """
    procs = read_procs()
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    total = 0.0
    stack = [root] if root in procs else []
    while stack:
        proc = procs[stack.pop()]
        if replica_app(proc.title) in other_apps:
            continue
        total += proc.cpu_s
        stack.extend(children.get(proc.pid, ()))
    return total


class CpuSampler:
    """Reads a CPU-seconds counter every `interval_s` in a thread, so a run's
    CPU can be cut to its own window afterwards."""

    def __init__(self, read: Callable[[], float], interval_s: float = 0.5) -> None:
        self._read = read
        self._interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def begin(self) -> CpuSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            self._samples.append((time.time(), self._read()))
            if self._stop.wait(self._interval_s):
                break
        self._samples.append((time.time(), self._read()))

    def end(self) -> list[tuple[float, float]]:
        """Stop; the (unix time, CPU-seconds) samples taken."""
        self._stop.set()
        self._thread.join()
        return list(self._samples)


def cpu_between(
    samples: list[tuple[float, float]], start: float, end: float
) -> float | None:
    """CPU-seconds used between two instants, interpolated between samples;
    None when the samples do not cover the window."""
    if len(samples) < 2 or samples[0][0] > start or samples[-1][0] < end:
        return None

    def at(t: float) -> float:
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return samples[-1][1]

    return at(end) - at(start)
