"""Rerankers: the offline fusion default and a tiny real cross-encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelNotFoundError
from models.reranker import CrossEncoderReranker, FusionReranker
from tests.factories_retrieval import build_tiny_cross_encoder

CASES = [
    (
        "How does ragserve batch requests?",
        [
            "The ingress validates OpenAI requests and starts the root span.",
            "Kubernetes pods mount the index from a volume.",
            "Concurrent requests are grouped into batches with ray.serve.batch "
            "until max_batch_size items wait or batch_wait_timeout_s passes.",
        ],
        2,
    ),
    (
        "What is the capital of France?",
        [
            "Bananas are rich in potassium.",
            "Paris is the capital and largest city of France.",
            "The capital letter A starts the alphabet.",
        ],
        1,
    ),
    (
        "how to fix a flat bicycle tyre",
        [
            "To fix a flat tyre on a bicycle, patch the inner tube and pump it "
            "back up.",
            "Bicycle lanes make city commuting safer.",
            "A flat index performs exact nearest neighbour search.",
        ],
        0,
    ),
]


@pytest.fixture(scope="module")
def fusion(default_embedder) -> FusionReranker:
    return FusionReranker(default_embedder)


@pytest.mark.parametrize(("query", "passages", "best"), CASES)
def test_fusion_ranks_the_relevant_passage_first(fusion, query, passages, best):
    scores = fusion.score(query, passages)

    assert len(scores) == len(passages)
    assert int(np.argmax(scores)) == best


def test_fusion_score_many_equals_one_call_per_query(fusion):
    items = [(q, p) for q, p, _ in CASES]

    together = fusion.score_many(items)

    for (query, passages), scores in zip(items, together, strict=True):
        assert scores == pytest.approx(fusion.score(query, passages), abs=1e-6)


def test_fusion_handles_empty_passage_lists_and_stopword_queries(fusion):
    passages = ["Ray Serve batches requests.", "the of and"]

    results = fusion.score_many([("anything", []), ("the and of", passages)])

    assert results[0] == []
    assert len(results[1]) == 2
    assert all(np.isfinite(results[1]))
    assert fusion.score("a query", []) == []


def test_fusion_rejects_dense_weight_outside_unit_interval(default_embedder):
    with pytest.raises(ValueError, match="dense_weight"):
        FusionReranker(default_embedder, dense_weight=1.5)


# --- cross-encoder -----------------------------------------------------------

QUERY = "how does ragserve batch requests"
PASSAGES = [
    "ragserve batches requests",
    "the cat sat on the mat",
    "paris is the capital of france and the weather is sunny with rain",
    "a",
    "gpu memory for the index search on kubernetes deployment with ray serve",
    "stream tokens",
]


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce")


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_dir) -> CrossEncoderReranker:
    return CrossEncoderReranker(str(cross_encoder_dir), device="cpu")


def test_cross_encoder_returns_one_score_per_passage_per_query(cross_encoder):
    items = [(QUERY, PASSAGES), ("empty", []), ("what is the capital", PASSAGES[:2])]

    results = cross_encoder.score_many(items)

    assert [len(r) for r in results] == [len(PASSAGES), 0, 2]
    assert all(isinstance(s, float) for r in results for s in r)
    # A random model still tells these passages apart, so order checks below bite.
    assert len({round(s, 4) for s in results[0]}) == len(PASSAGES)


def test_cross_encoder_keeps_input_order_when_batching(cross_encoder):
    alone = [cross_encoder.score(QUERY, [p])[0] for p in PASSAGES]

    together = cross_encoder.score(QUERY, PASSAGES)
    reversed_ = cross_encoder.score(QUERY, PASSAGES[::-1])

    assert together == pytest.approx(alone, abs=1e-5)
    assert reversed_[::-1] == pytest.approx(alone, abs=1e-5)


def test_token_budget_micro_batches_score_like_one_big_batch(cross_encoder_dir):
    items = [(QUERY, PASSAGES), ("what is the capital of france", PASSAGES[::-1])]
    one_batch = CrossEncoderReranker(
        str(cross_encoder_dir), device="cpu", max_batch_tokens=1_000_000
    )
    micro = CrossEncoderReranker(
        str(cross_encoder_dir), device="cpu", max_batch_tokens=24
    )

    expected = one_batch.score_many(items)
    got = micro.score_many(items)

    for want, have in zip(expected, got, strict=True):
        assert have == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("path", ["/nonexistent/reranker", "./missing-model-dir"])
def test_cross_encoder_with_a_missing_path_raises_model_not_found(path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        CrossEncoderReranker(path)


def test_fusion_uses_the_callers_cosines_instead_of_embedding(default_embedder):
    from models.embedder import Embedder

    class Counting(Embedder):
        def __init__(self, inner: Embedder) -> None:
            self.inner, self.calls = inner, 0
            self.model_id, self.dimension = inner.model_id, inner.dimension

        def embed(self, texts: list[str]) -> np.ndarray:
            self.calls += 1
            return self.inner.embed(texts)

    query, passages, best = CASES[0]
    vectors = default_embedder.embed([query, *passages])
    cosines = [float(vectors[0] @ v) for v in vectors[1:]]
    counting = Counting(default_embedder)
    reranker = FusionReranker(counting)

    given = reranker.score(query, passages, dense=cosines)

    assert counting.calls == 0  # nothing embedded again
    assert given == pytest.approx(reranker.score(query, passages), abs=1e-5)
    assert counting.calls == 1
    assert int(np.argmax(given)) == best
    with pytest.raises(ValueError, match="2 dense scores for 3 passages"):
        reranker.score(query, passages, dense=cosines[:2])


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.embedded: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        return self.inner.embed(texts)


@pytest.mark.parametrize("cache_size", [2, 0])
def test_fusion_caches_the_most_recent_vectors(default_embedder, cache_size) -> None:
    counting = CountingEmbedder(default_embedder)
    reranker = FusionReranker(counting, cache_size=cache_size)
    query, passages, best = CASES[1]

    first = reranker.score(query, passages)  # 4 texts into a cache of 2
    counting.embedded.clear()
    again = reranker.score(query, passages[1:])
    embedded = sorted(counting.embedded)

    assert int(np.argmax(first)) == best
    fresh = FusionReranker(default_embedder, cache_size=0)
    assert again == pytest.approx(fresh.score(query, passages[1:]), abs=1e-6)
    if cache_size:
        # The last two texts of the first call were kept: only the query is new.
        assert embedded == [query]
    else:
        assert embedded == sorted([query, *passages[1:]])
