"""The first stage's modes: BM25 stored with the index, reciprocal rank
fusion with the dense list, `retrieval.mode` per release."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph.cli.releases import release_settings
from graph.config import ConfigError, RagServingArgs
from graph.engines import make_reranker
from graph.pipeline import RagPipeline, RetrievalOptions, Steps
from graph.prompts import get_template
from models.config import EmbedderConfig, RerankerConfig
from retrieval.hybrid import reciprocal_rank_fusion
from retrieval.index import build_index
from retrieval.types import SearchMode
from tests.factories_retrieval import write_tree
from tests.unit.conftest import load

# Identifiers, config keys and error codes: a dense embedder sees the same
# few words in each of these documents and little else.
CODES = {
    f"errors/e{n}.md": f"# Error E{n}\n\nThe request failed with error code "
    f"E{n}; check the config key retrieval.{key} and retry.\n"
    for n, key in zip(range(4010, 4018), "abcdefgh", strict=True)
}


@pytest.fixture(scope="module")
def codes_index(tmp_path_factory, embedder) -> Path:
    docs = write_tree(tmp_path_factory.mktemp("codes"), CODES)
    out = tmp_path_factory.mktemp("codes-index") / "index"
    build_index(docs, out, embedder, progress=False)
    return out


def test_rrf_sums_reciprocal_ranks_across_lists():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 4]], k=60, limit=10)

    assert [i for i, _ in fused] == [3, 1, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    assert dict(fused)[4] == pytest.approx(1 / 62)
    assert reciprocal_rank_fusion([[1, 2, 3]], k=1, limit=2) == [
        (1, 1 / 2),
        (2, 1 / 3),
    ]
    with pytest.raises(ValueError, match="rrf k"):
        reciprocal_rank_fusion([[1]], k=0, limit=1)


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_an_exact_error_code_is_found_by_sparse_and_hybrid(codes_index, embedder, mode):
    retriever = load(codes_index, embedder)
    query = "What does error E4016 mean?"

    hits = retriever.search(
        embedder.embed([query]), len(retriever), [query], SearchMode(mode)
    )[0]

    assert hits[0].doc_id == "errors/e4016.md"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if mode == "sparse":  # only chunks that share a term with the query
        assert {h.doc_id for h in hits} == {"errors/e4016.md"} | {
            d for d in CODES if "error" in CODES[d].lower()
        }


def test_sparse_hits_carry_the_same_cosine_a_dense_search_gives(codes_index, embedder):
    retriever = load(codes_index, embedder)
    query = "config key retrieval.c"
    vectors = embedder.embed([query])

    dense = {h.chunk_id: h.score for h in retriever.search(vectors, 100)[0]}
    sparse = retriever.search(vectors, 100, [query], SearchMode("sparse"))[0]

    assert sparse
    for hit in sparse:
        assert hit.cosine == pytest.approx(dense[hit.chunk_id], abs=1e-5)


def test_a_query_of_stopwords_finds_nothing_sparse_and_dense_order_in_hybrid(
    codes_index, embedder
):
    retriever = load(codes_index, embedder)
    query = "what is the"
    vectors = embedder.embed([query])

    sparse = retriever.search(vectors, 5, [query], SearchMode("sparse"))[0]
    hybrid = retriever.search(vectors, 5, [query], SearchMode("hybrid"))[0]
    dense = retriever.search(vectors, 5)[0]

    assert sparse == []
    assert [h.chunk_id for h in hybrid] == [h.chunk_id for h in dense]


def test_sparse_and_hybrid_need_the_query_texts(codes_index, embedder):
    retriever = load(codes_index, embedder)

    with pytest.raises(ValueError, match="query texts"):
        retriever.search(embedder.embed(["x"]), 3, None, SearchMode("hybrid"))


async def test_the_pipeline_retrieves_in_its_releases_mode_and_reuses_cosines(
    codes_index, embedder
):
    retriever = load(codes_index, embedder)
    fusion = make_reranker(RerankerConfig(), EmbedderConfig(), embedder=embedder)
    seen: list[list[float] | None] = []

    async def embed(texts):
        return embedder.embed(texts)

    async def retrieve(vectors, k, queries, mode):
        return retriever.search(vectors, k, queries, mode)

    async def rerank(query, passages, dense=None):
        seen.append(dense)
        return fusion.score(query, passages, dense)

    async def generate(request):  # pragma: no cover - retrieval only
        raise AssertionError("not generating")
        yield

    pipeline = RagPipeline(
        Steps(embed, retrieve, rerank, generate),
        get_template("rag-v1"),
        4000,
        SearchMode("hybrid", rrf_k=10),
    )

    hits = await pipeline.retrieve("error E4013", RetrievalOptions(True, 8, 3, True))

    assert hits[0].doc_id == "errors/e4013.md"
    assert seen and seen[0] is not None and len(seen[0]) == 8


def test_retrieval_mode_is_a_checked_config_key_pinned_by_releases():
    args = RagServingArgs.load(None, ["retrieval.mode=hybrid", "retrieval.rrf_k=20"])

    _, settings = release_settings(args)

    assert (args.retrieval.mode, args.retrieval.rrf_k) == ("hybrid", 20)
    assert settings["retrieval"]["mode"] == "hybrid"
    assert settings["retrieval"]["rrf_k"] == 20
    with pytest.raises(ConfigError, match="mode"):
        RagServingArgs.load(None, ["retrieval.mode=bm25"])
    with pytest.raises(ConfigError, match="rrf_k"):
        RagServingArgs.load(None, ["retrieval.rrf_k=0"])
