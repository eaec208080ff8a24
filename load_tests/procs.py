"""Resident memory of a process tree and of the Serve replicas in it, read
from /proc (Linux), so a benchmark or test can weigh a graph it started, and
which kind of mapping (heap, anonymous, library) holds a tree's own pages."""

from __future__ import annotations

from pathlib import Path

import psutil

REPLICA_MARKER = "ServeReplica:"


def _processes() -> tuple[dict[int, list[int]], dict[int, int], dict[int, str]]:
    """(children by parent pid, RSS KiB by pid, command line by pid)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cmd: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
            cmd[int(entry.name)] = (
                (entry / "cmdline").read_bytes().decode(errors="replace")
            )
        except OSError:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry.name)] = int(line.split()[1])
    return children, rss, cmd


def _tree(pid: int, children: dict[int, list[int]], rss: dict[int, int]) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (MiB)."""
    children, rss, _ = _processes()
    return _tree(pid, children, rss) / 1024


def replica_rss_mib(pid: int, app: str = "ragserve") -> dict[str, float]:
    """RSS (MiB, with children such as vLLM's EngineCore) of each Serve replica
    of `app` under the process `pid`, summed by deployment name."""
    children, rss, cmd = _processes()
    mine, todo = set(), [pid]
    while todo:
        p = todo.pop()
        mine.add(p)
        todo.extend(children.get(p, []))
    marker = f"{REPLICA_MARKER}{app}:"
    out: dict[str, float] = {}
    for p in mine:
        if marker in cmd.get(p, ""):
            name = cmd[p].split(marker, 1)[1].split(".", 1)[0].split("\0")[0]
            out[name] = out.get(name, 0) + _tree(p, children, rss) / 1024
    return out


def _tree_processes(pid: int) -> list[psutil.Process]:
    """A process and all its descendants; none once it has exited."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_memory_mib(pid: int) -> dict[str, float]:
    """RSS and USS (MiB) of a process and all its descendants.

    RSS counts every page a process has touched, its share of the Ray object
    store, shared memory and libraries included, and the sum over a tree counts
    a shared page once per process; USS (psutil's, from smaps) counts only the
    pages no other process maps, the memory that leaves with the tree and
    what a leak grows. A tree that is gone reads as zeros.
    """
    rss = uss = 0.0
    for proc in _tree_processes(pid):
        mem = process_memory_mib(proc)
        if mem is not None:
            rss += mem["rss_mb"]
            uss += mem["uss_mb"]
    return {"rss_mb": rss, "uss_mb": uss}


def process_memory_mib(proc: psutil.Process) -> dict[str, float] | None:
    """RSS and USS (MiB) of one process; None once it has exited."""
    try:
        mem = proc.memory_full_info()
    except psutil.Error:
        return None
    return {"rss_mb": mem.rss / 2**20, "uss_mb": mem.uss / 2**20}


#: The kinds `private_by_kind_mib` sorts a mapping's private pages into.
KINDS = ("heap", "anon", "lib", "file", "stack")


def mapping_kind(path: str) -> str:
    """The kind of one mapping, by its smaps path: `heap` is glibc's main
    arena (brk), `anon` every anonymous mmap (pymalloc's arenas, glibc's
    thread arenas and large blocks, thread stacks), `lib` a shared library's
    pages (code faulted in as it first runs, relocations, its data), `stack`
    the main thread's stack, `file` any other mapped file."""
    if path == "[heap]":
        return "heap"
    if path.startswith("[stack"):
        return "stack"
    if not path or path.startswith("[") or path.startswith("/dev/zero"):
        return "anon"  # /dev/zero: a shared anonymous mapping
    name = path.rsplit("/", 1)[-1]
    return "lib" if ".so" in name else "file"


def private_by_kind_mib(pid: int) -> dict[str, float]:
    """A process tree's private pages (what USS sums), MiB by `mapping_kind`,
    so a growing USS can be told apart: live or kept heap, or code pages
    that are read in once."""
    out = dict.fromkeys(KINDS, 0.0)
    for proc in _tree_processes(pid):
        try:
            maps = proc.memory_maps(grouped=True)
        except psutil.Error:
            continue
        for m in maps:
            private = (m.private_clean + m.private_dirty) / 2**20
            out[mapping_kind(m.path)] += private
    return out
