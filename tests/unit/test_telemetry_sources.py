"""Where the metrics' figures come from: the handle-queue wait with tracing off,
and GPU memory read per process through NVML (a stand-in NVML on this CPU
machine; tests/gpu/ reads the real one) without opening a CUDA context."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace

from telemetry import gpu
from telemetry.tracing import SENT_AT, handle_wait_ms, inject, tracing_enabled

MiB = 2**20


def test_the_handle_wait_is_measured_with_tracing_off() -> None:
    assert not tracing_enabled()
    assert not trace.get_current_span().get_span_context().is_valid

    carrier = inject()
    time.sleep(0.02)

    assert "traceparent" not in carrier
    assert SENT_AT in carrier
    wait = handle_wait_ms(carrier)
    assert wait is not None and 20 <= wait < 10_000


class FakeNVML:
    """NVML's calls as pynvml names them, over a table of devices."""

    def __init__(self, devices: list[dict[str, Any]]) -> None:
        self.devices = devices

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> dict[str, Any]:
        (found,) = [d for d in self.devices if d["uuid"] == uuid]
        return found

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict[str, Any]) -> list:
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in handle["procs"].items()
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: dict[str, Any]) -> list:
        return []

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(used=handle["used"], total=handle["total"])


@pytest.fixture
def engine_core() -> Iterator[int]:
    """A real child process, as vLLM's EngineCore is of the generator replica."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def devices(child: int) -> list[dict[str, Any]]:
    stranger = 999_999_999  # another process, on both devices
    return [
        {
            "uuid": "GPU-a",
            "procs": {child: 700 * MiB, stranger: 100 * MiB},
            "used": 900 * MiB,
            "total": 80_000 * MiB,
        },
        {"uuid": "GPU-b", "procs": {stranger: 5 * MiB}, "used": 5 * MiB, "total": 1},
    ]


def test_generator_figures_are_its_engine_cores_per_process_memory(
    engine_core: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "_nvml", lambda: FakeNVML(devices(engine_core)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    assert engine_core in gpu.child_pids()
    attrs = gpu.gpu_memory_attributes(gpu.child_pids())

    assert attrs == {
        "gpu.memory.process_bytes": 700 * MiB,
        "gpu.memory.used_bytes": 900 * MiB,
        "gpu.memory.total_bytes": 80_000 * MiB,
        "gpu.device": 0,
    }
    # This process alone holds nothing on either GPU: no figures, not zeros.
    assert gpu.gpu_memory_attributes() == {}


def test_in_a_container_nvml_names_the_assigned_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NVML reports host PIDs there, so no process matches.
    monkeypatch.setattr(gpu, "_nvml", lambda: FakeNVML(devices(1)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b")

    assert gpu.gpu_memory_attributes() == {
        "gpu.memory.used_bytes": 5 * MiB,
        "gpu.memory.total_bytes": 1,
    }


def fake_torch(initialized: bool) -> SimpleNamespace:
    def current_device() -> int:
        if not initialized:
            raise AssertionError("current_device() would open a CUDA context")
        return 0

    cuda = SimpleNamespace(
        is_initialized=lambda: initialized,
        current_device=current_device,
        memory_allocated=lambda index: 3 * MiB,
        memory_reserved=lambda index: 4 * MiB,
    )
    return SimpleNamespace(cuda=cuda)


@pytest.mark.parametrize("initialized", [False, True])
def test_torch_figures_only_where_torch_already_runs_cuda(
    initialized: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "_nvml", lambda: None)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized))

    attrs = gpu.gpu_memory_attributes()

    if initialized:
        assert attrs == {
            "gpu.memory.allocated_bytes": 3 * MiB,
            "gpu.memory.reserved_bytes": 4 * MiB,
        }
    else:
        assert attrs == {}
