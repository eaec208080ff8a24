"""Shared fixtures: offline environment, the test index and the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Defaults ship in packages; a test must never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
TEST_CACHE = Path(
    os.environ.get("RAGSERVE_TEST_CACHE", "~/.cache/ragserve/test")
).expanduser()


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    """A tiny random Llama folder that vLLM loads in seconds (cached by content)."""
    from tests.factories import build_tiny_llama

    return build_tiny_llama(TEST_CACHE / "tiny-llama")


@pytest.fixture(scope="session")
def default_embedder():
    from models.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("default")


@pytest.fixture(scope="session")
def docs_index(tmp_path_factory: pytest.TempPathFactory, default_embedder) -> Path:
    """The bundled docs/ corpus indexed with the default embedder."""
    from retrieval.index import build_index

    out = tmp_path_factory.mktemp("index") / "docs"
    build_index(DOCS, out, default_embedder, progress=False)
    return out
