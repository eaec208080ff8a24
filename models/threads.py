"""Intra-op threads of one model process: how many, and the env that says so.

Knows torch's thread pool, OpenMP's variables and vLLM's CPU thread binding;
knows nothing of Ray (which sets `OMP_NUM_THREADS` from a replica's `num_cpus`,
1 for any fraction: the reason this module exists) or of the other nodes.
"""

from __future__ import annotations

import os


def usable_cores() -> list[int]:
    """The CPU ids this process may run on (its affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def resolve_threads(threads: int | None) -> int:
    """`threads`, or every usable core when None."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        return threads
    return len(usable_cores())


def use_threads(threads: int | None) -> int:
    """Size torch's intra-op pool of this process (embedder, reranker).

    Returns:
        The thread count now in force.
    """
    import torch

    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def engine_thread_env(threads: int | None) -> dict[str, str]:
    """Environment for a vLLM engine on CPU with `threads` OpenMP threads.

    vLLM's CPU worker binds its OpenMP threads to `VLLM_CPU_OMP_THREADS_BIND`;
    its "auto" keeps a core back for the scheduler, which on a 2-core machine
    leaves one thread. Binding the first `threads` usable cores (all of them by
    default) gives the worker those threads; `OMP_NUM_THREADS` says the same to
    every process the engine starts. Passive waiting as for the torch nodes:
    an engine whose threads spin between steps took 4x the CPU per request
    of one whose threads sleep, on shared cores.
    """
    cores = usable_cores()
    n = min(resolve_threads(threads), len(cores))
    return {
        "OMP_NUM_THREADS": str(n),
        "OMP_WAIT_POLICY": "PASSIVE",
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores[:n]),
    }


def torch_process_env(threads: int | None) -> dict[str, str]:
    """Environment for a process whose torch runs a node's model.

    OpenMP reads it once, when torch loads, so it must be in place before the
    process starts (a replica's `runtime_env`, a benchmark harness). Passive
    waiting: a pool thread that finished its share sleeps instead of spinning
    for the next parallel region, which on shared cores took 5-7x the CPU per
    text at 2 threads (see docs/performance.md).
    """
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env
