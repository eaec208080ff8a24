"""Shared by the retrieval tests (test_retrieval*.py): a tiny three-document
corpus, its index built with a caching embedder, and shortcuts to load and
query an index.

Knows the corpus and how to build, load and ask an index; knows nothing of
what the tests assert.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from retrieval.faiss_index import FaissRetriever

TINY_DOCS = {
    "install.md": "# Installing\n\nRun make install to create the virtual "
    "environment with pip.\n\n## GPU\n\nOn CUDA machines install faiss-gpu.\n",
    "cooking.md": "# Pancakes\n\nMix flour, eggs and milk, then fry the batter "
    "in butter until golden.\n",
    "weather.txt": "Tomorrow will be sunny in the morning with rain showers in "
    "the afternoon.\n",
}


@pytest.fixture(scope="module")
def embedder(default_embedder):
    """The default embedder, remembering vectors so rebuilds are cheap."""
    from tests.factories_retrieval import CachingEmbedder

    return CachingEmbedder(default_embedder)


@pytest.fixture(scope="module")
def tiny_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.factories_retrieval import write_tree

    return write_tree(tmp_path_factory.mktemp("tiny-docs"), TINY_DOCS)


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_docs, embedder) -> Path:
    from retrieval.index import build_index

    out = tmp_path_factory.mktemp("tiny-index") / "index"
    build_index(tiny_docs, out, embedder, progress=False)
    return out


@pytest.fixture(scope="module")
def many_docs(tmp_path_factory) -> Path:
    """A corpus of 240 distinct one-sentence documents: enough to train IVF."""
    animals = ["fox", "owl", "whale", "beetle", "horse", "salmon"]
    cities = ["Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi"]
    hobbies = ["paints murals", "repairs bicycles", "bakes bread", "studies stars"]
    from tests.factories_retrieval import write_tree

    files = {}
    for i, (animal, city, hobby) in enumerate(
        (a, c, h) for a in animals for c in cities for h in hobbies
    ):
        for variant, when in enumerate(("every morning", "on weekends")):
            files[f"d{i:03d}-{variant}.txt"] = f"The {animal} in {city} {hobby} {when}."
    return write_tree(tmp_path_factory.mktemp("many-docs"), files)


def load(index_dir: Path, embedder) -> FaissRetriever:
    from retrieval.faiss_index import FaissRetriever

    return FaissRetriever.load(index_dir, embedder.model_id, embedder.dimension)


def ask(retriever: FaissRetriever, embedder, question: str, k: int = 3):
    return retriever.search(embedder.embed([question]), k)[0]
