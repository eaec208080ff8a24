"""The FAISS index: building it, its manifest and searching it, with real FAISS
and the real embedder."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import pytest

from retrieval.config import IndexBuildConfig
from retrieval.errors import RetrievalError
from retrieval.index import build_index
from retrieval.manifest import read_manifest
from tests.conftest import DOCS
from tests.unit.conftest import ask, load

# --- index: build and search -------------------------------------------------


@pytest.mark.parametrize(
    ("question", "doc_id"),
    [
        ("How does ragserve batch requests?", "batching.md"),
        ("How do I run ragserve on Kubernetes?", "kubernetes.md"),
        ("How do I find a slow request in Jaeger?", "observability.md"),
        ("What does an error response look like?", "api.md"),
    ],
)
def test_docs_index_answers_questions_from_the_right_page(
    docs_index, default_embedder, question, doc_id
):
    retriever = load(docs_index, default_embedder)

    hits = ask(retriever, default_embedder, question)

    assert hits[0].doc_id == doc_id
    assert hits[0].title
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_manifest_describes_the_docs_index(docs_index, default_embedder):
    manifest = read_manifest(docs_index)
    doc_files = sorted(p.name for p in DOCS.glob("*.md"))

    assert manifest.embedder_model_id == default_embedder.model_id
    assert manifest.dimension == default_embedder.dimension == 384
    assert manifest.metric == "inner_product"
    assert manifest.index_type == "flat"
    assert (manifest.chunk_size, manifest.chunk_overlap) == (200, 40)
    assert [d.doc_id for d in manifest.documents] == doc_files
    assert manifest.document_count == len(doc_files)
    for entry in manifest.documents:
        raw = (DOCS / entry.doc_id).read_bytes()
        assert entry.sha256 == hashlib.sha256(raw).hexdigest()
        assert entry.chunks >= 1
    assert manifest.chunk_count == sum(d.chunks for d in manifest.documents)
    assert {"index.faiss", "chunks.jsonl"} < set(manifest.files)
    assert any(name.startswith("bm25/") for name in manifest.files)
    assert manifest.format_version == 2
    assert manifest.version and manifest.parent is None
    assert manifest.next_chunk_id == manifest.chunk_count
    for name, digest in manifest.files.items():
        assert hashlib.sha256((docs_index / name).read_bytes()).hexdigest() == digest
    on_disk = json.loads((docs_index / "manifest.json").read_text())
    assert on_disk["chunk_count"] == manifest.chunk_count
    assert len(load(docs_index, default_embedder)) == manifest.chunk_count


def test_search_returns_at_most_k_hits_per_query_best_first(tiny_index, embedder):
    retriever = load(tiny_index, embedder)
    questions = ["How do I install it?", "How do I make pancakes?"]

    batched = retriever.search(embedder.embed(questions), k=100)

    assert len(batched) == 2
    assert all(len(hits) == len(retriever) for hits in batched)
    assert batched[0][0].doc_id == "install.md"
    assert batched[1][0].doc_id == "cooking.md"
    single = retriever.search(embedder.embed(questions[1:]), k=1)
    assert single[0][0] == batched[1][0]
    assert retriever.search(np.zeros((0, embedder.dimension), np.float32), 3) == []


@pytest.mark.parametrize("k", [0, -1])
def test_search_rejects_k_below_one(tiny_index, embedder, k):
    retriever = load(tiny_index, embedder)

    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.search(embedder.embed(["install"]), k)


def test_search_rejects_vectors_of_another_dimension(tiny_index, embedder):
    retriever = load(tiny_index, embedder)

    with pytest.raises(ValueError, match="384"):
        retriever.search(np.ones((1, 768), np.float32), 3)


@pytest.mark.parametrize(
    ("config", "index_type"),
    [
        (IndexBuildConfig(index_type="flat"), "flat"),
        (IndexBuildConfig(index_type="hnsw", hnsw_m=16), "hnsw"),
        (IndexBuildConfig(index_type="ivf", ivf_nprobe=1), "ivf"),
        (IndexBuildConfig(index_type="ivf", ivf_nlist=4, ivf_nprobe=1), "ivf"),
    ],
    ids=["flat", "hnsw", "ivf-auto-nlist", "ivf-nlist-4"],
)
def test_every_index_type_finds_each_chunk_by_its_own_text(
    tmp_path, many_docs, embedder, config, index_type
):
    manifest = build_index(
        many_docs, tmp_path / "index", embedder, config, progress=False
    )
    retriever = load(tmp_path / "index", embedder)
    chunks = [json.loads(line) for line in (tmp_path / "index/chunks.jsonl").open()]
    sample = chunks[::23]

    results = retriever.search(embedder.embed([c["text"] for c in sample]), k=3)

    assert manifest.index_type == index_type
    assert manifest.chunk_count == len(retriever) == 240
    if index_type == "ivf":
        assert manifest.ivf_nlist == (config.ivf_nlist or 240 // 39)
    for chunk, hits in zip(sample, results, strict=True):
        assert hits[0].chunk_id == chunk["chunk_id"]
        assert hits[0].text == chunk["text"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_ivf_on_too_small_a_corpus_falls_back_to_flat_with_a_warning(
    tmp_path, tiny_docs, embedder, caplog
):
    with caplog.at_level(logging.WARNING, logger="retrieval.faiss_index"):
        manifest = build_index(
            tiny_docs, tmp_path / "index", embedder, IndexBuildConfig(index_type="ivf")
        )

    assert manifest.index_type == "flat"
    assert "flat" in caplog.text
    hits = ask(load(tmp_path / "index", embedder), embedder, "pancake batter")
    assert hits[0].doc_id == "cooking.md"


def _faiss_sees_a_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@pytest.mark.skipif(_faiss_sees_a_gpu(), reason="a GPU is present")
def test_use_gpu_always_without_a_gpu_is_refused(tmp_path, tiny_docs, embedder):
    config = IndexBuildConfig(use_gpu="always")

    with pytest.raises(RetrievalError, match="faiss-gpu"):
        build_index(tiny_docs, tmp_path / "index", embedder, config, progress=False)

    assert os.listdir(tmp_path) == []
