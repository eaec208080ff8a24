"""GPU memory telemetry and FAISS on GPU (skipped where CUDA is absent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
MiB = 2**20


def test_gpu_memory_attributes_follow_allocations() -> None:
    import torch

    from telemetry.gpu import gpu_memory_attributes

    torch.empty(1, device="cuda")  # this process now runs CUDA
    before = gpu_memory_attributes()
    block = torch.empty(64 * MiB, dtype=torch.uint8, device="cuda")
    after = gpu_memory_attributes()
    assert (
        after["gpu.memory.allocated_bytes"]
        >= before["gpu.memory.allocated_bytes"] + block.numel()
    )
    assert after["gpu.memory.reserved_bytes"] >= after["gpu.memory.allocated_bytes"]
    assert after["gpu.memory.process_bytes"] >= before["gpu.memory.process_bytes"]
    assert 0 < after["gpu.memory.used_bytes"] <= after["gpu.memory.total_bytes"]


def test_reading_the_figures_opens_no_cuda_context() -> None:
    script = (
        "import torch\n"
        "from telemetry.gpu import gpu_memory_attributes\n"
        "attrs = gpu_memory_attributes()\n"
        "assert not torch.cuda.is_initialized(), 'a CUDA context was opened'\n"
        "assert 'gpu.memory.process_bytes' not in attrs, attrs\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True)


async def test_generator_memory_is_read_from_its_engine_core(tiny_llama) -> None:
    import torch

    from models.config import GeneratorConfig
    from models.vllm_engine import VLLMEngine
    from telemetry.gpu import child_pids, gpu_memory_attributes

    engine = VLLMEngine(
        GeneratorConfig(model=str(tiny_llama), max_model_len=256, max_num_seqs=4)
    )
    await engine.start()
    try:
        held = gpu_memory_attributes(child_pids())
        alone = gpu_memory_attributes()
        # The model and its KV cache live in EngineCore, not in this process.
        assert held["gpu.memory.process_bytes"] > 64 * MiB
        assert (
            alone.get("gpu.memory.process_bytes", 0) < held["gpu.memory.process_bytes"]
        )
        assert (await engine.stats())["kv_cache_tokens"] >= 256
        assert not torch.cuda.is_initialized()
    finally:
        engine.shutdown()


def test_faiss_index_on_gpu(tmp_path, default_embedder) -> None:
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "StandardGpuResources"):
        pytest.skip("faiss-cpu installed; the gpu extra brings faiss-gpu")
    from retrieval.faiss_index import FaissRetriever
    from retrieval.index import build_index
    from tests.conftest import DOCS

    build_index(DOCS, tmp_path / "idx", default_embedder, progress=False)
    retriever = FaissRetriever.load(
        tmp_path / "idx",
        default_embedder.model_id,
        default_embedder.dimension,
        "always",
    )
    assert retriever.on_gpu
    hits = retriever.search(
        default_embedder.embed(["How does ragserve batch requests?"]), 3
    )
    assert hits[0][0].doc_id == "batching.md"
    assert np.isfinite(hits[0][0].score)
