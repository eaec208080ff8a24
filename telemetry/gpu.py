"""GPU memory as span attributes and gauges, read where the memory is.

NVML's per-process figures cover the processes that hold a step's memory
(vLLM's EngineCore is a child of the generator replica, so callers name their
children); torch's allocator figures are read only in a process where torch
has already initialised CUDA, so reading never opens a CUDA context of its
own. Without a GPU (or NVML) every function returns nothing, so spans carry
no GPU attributes at all (never fake zeros).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger("ragserve.telemetry")


@functools.lru_cache(maxsize=1)
def _nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no driver, no library: NVML attributes stay absent
        logger.debug("NVML unavailable", exc_info=True)
        return None


def child_pids(pid: int | None = None) -> list[int]:
    """Every descendant of `pid` (this process by default), from /proc."""
    found: list[int] = []
    todo = [pid or os.getpid()]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _torch_figures() -> dict[str, int]:
    """torch's caching-allocator view, only if this process already uses CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    index = torch.cuda.current_device()  # safe: the context exists already
    return {
        "gpu.memory.allocated_bytes": int(torch.cuda.memory_allocated(index)),
        "gpu.memory.reserved_bytes": int(torch.cuda.memory_reserved(index)),
    }


def _process_memory(nvml: Any, handle: Any, pids: set[int]) -> int | None:
    """Bytes NVML says `pids` hold on one device (None: none of them is on it)."""
    held = None
    for query in (
        nvml.nvmlDeviceGetComputeRunningProcesses,
        nvml.nvmlDeviceGetGraphicsRunningProcesses,
    ):
        try:
            processes = query(handle)
        except Exception:
            continue
        for proc in processes:
            if proc.pid in pids and proc.usedGpuMemory is not None:
                held = (held or 0) + int(proc.usedGpuMemory)
    return held


def _assigned_devices(nvml: Any) -> list[Any]:
    """Handles of the GPUs Ray (or the container) assigned: CUDA_VISIBLE_DEVICES."""
    ids = [
        v.strip()
        for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        if v.strip()
    ]
    handles = []
    for dev in ids:
        try:
            if dev.isdigit():
                handles.append(nvml.nvmlDeviceGetHandleByIndex(int(dev)))
            else:
                handles.append(nvml.nvmlDeviceGetHandleByUUID(dev))
        except Exception:
            logger.debug("NVML has no device %s", dev, exc_info=True)
    return handles


def _nvml_figures(nvml: Any, pids: set[int]) -> dict[str, int]:
    """NVML: what `pids` hold and the devices they are on.

    In a container without the host's PID namespace NVML reports host PIDs,
    so none match; the devices assigned to this process are named then
    (device-wide figures only).
    """
    found: list[tuple[int, Any, int | None]] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        held = _process_memory(nvml, handle, pids)
        if held is not None:
            found.append((index, handle, held))
    if not found:
        found = [(-1, handle, None) for handle in _assigned_devices(nvml)]
    if not found:
        return {}
    infos = [nvml.nvmlDeviceGetMemoryInfo(handle) for _, handle, _ in found]
    attrs = {
        "gpu.memory.used_bytes": int(sum(i.used for i in infos)),
        "gpu.memory.total_bytes": int(sum(i.total for i in infos)),
    }
    if found[0][2] is not None:
        attrs["gpu.memory.process_bytes"] = int(sum(h or 0 for _, _, h in found))
    if len(found) == 1 and found[0][0] >= 0:
        attrs["gpu.device"] = found[0][0]
    return attrs


def gpu_memory_attributes(pids: Iterable[int] = ()) -> dict[str, int]:
    """GPU memory held by this process and `pids`, as `gpu.memory.*` attributes.

    Args:
        pids: other processes whose memory belongs to this step (for the
            generator: its children, where vLLM's EngineCore runs the model).

    Returns:
        `gpu.memory.process_bytes` (NVML: what these processes hold, summed
        over their devices), `used_bytes` / `total_bytes` (NVML: those whole
        devices), `gpu.device` (NVML index, when one device), and, where torch
        runs CUDA in this process, `allocated_bytes` / `reserved_bytes`; empty
        when none of these processes is on a GPU.
    """
    attrs: dict[str, int] = {}
    nvml = _nvml()
    if nvml is not None:
        try:
            attrs.update(_nvml_figures(nvml, {os.getpid(), *pids}))
        except Exception:
            logger.debug("NVML query failed", exc_info=True)
    attrs.update(_torch_figures())
    return attrs
