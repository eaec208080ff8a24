"""GPU memory as span attributes and gauges: torch's allocator view and NVML's.

On a machine without CUDA every function returns nothing, so spans carry no
GPU attributes at all (never fake zeros).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger("ragserve.telemetry")


@functools.lru_cache(maxsize=1)
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=1)
def _nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no driver, no library: NVML attributes stay absent
        logger.debug("NVML unavailable", exc_info=True)
        return None


def _nvml_index(device_index: int) -> int:
    """NVML numbers every GPU; torch numbers the visible ones."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if device_index < len(ids) and ids[device_index].isdigit():
        return int(ids[device_index])
    return device_index


def gpu_memory_attributes(device_index: int | None = None) -> dict[str, int]:
    """Memory of the GPU this process uses, as `gpu.memory.*` attributes.

    Returns:
        `gpu.memory.allocated_bytes` / `reserved_bytes` (torch's caching
        allocator, this process) and `used_bytes` / `total_bytes` (NVML, the
        whole device); empty without CUDA.
    """
    if not _cuda_available():
        return {}
    import torch

    index = torch.cuda.current_device() if device_index is None else device_index
    attrs: dict[str, int] = {
        "gpu.device": index,
        "gpu.memory.allocated_bytes": int(torch.cuda.memory_allocated(index)),
        "gpu.memory.reserved_bytes": int(torch.cuda.memory_reserved(index)),
    }
    nvml = _nvml()
    if nvml is not None:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(_nvml_index(index))
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            attrs["gpu.memory.used_bytes"] = int(info.used)
            attrs["gpu.memory.total_bytes"] = int(info.total)
        except Exception:
            logger.debug("NVML query failed", exc_info=True)
    return attrs
