"""GPU memory telemetry and FAISS on GPU (skipped where CUDA is absent)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_gpu_memory_attributes_follow_allocations() -> None:
    import torch

    from telemetry.gpu import gpu_memory_attributes

    before = gpu_memory_attributes()
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    after = gpu_memory_attributes()
    assert (
        after["gpu.memory.allocated_bytes"]
        >= before["gpu.memory.allocated_bytes"] + block.numel()
    )
    assert after["gpu.memory.reserved_bytes"] >= after["gpu.memory.allocated_bytes"]
    assert 0 < after["gpu.memory.used_bytes"] <= after["gpu.memory.total_bytes"]


def test_faiss_index_on_gpu(tmp_path, default_embedder) -> None:
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "StandardGpuResources"):
        pytest.skip("faiss-cpu installed; the gpu extra brings faiss-gpu")
    from retrieval.index import FaissRetriever, build_index
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
