"""Test helpers for retrieval and reranking: document trees, embedder wrappers,
and a tiny cross-encoder.

Knows how to lay out small corpora and build a deterministic random BERT
cross-encoder folder; knows nothing of what the tests assert.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.embedder import Embedder


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` (relative path -> text or bytes) under `root`; return root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


class CachingEmbedder(Embedder):
    """The wrapped embedder's vectors, computed once per text."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self._cache[t] for t in texts]).astype(np.float32)


class CountingEmbedder(Embedder):
    """Delegates to `inner` and keeps every text it was asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.inner.embed(texts)


class FailingEmbedder(Embedder):
    """Delegates to `inner` but raises on call number `fail_on_call` (from 1)."""

    def __init__(self, inner: Embedder, fail_on_call: int = 2) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.calls = 0
        self._fail_on_call = fail_on_call

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self._fail_on_call:
            raise RuntimeError("embedder crashed (simulated)")
        return self.inner.embed(texts)


CROSS_ENCODER_TEXT = (
    "the a of to and is in how does what which do i it on for with by from "
    "ragserve batch batches batching request requests query queries token tokens "
    "budget index faiss vector vectors search retrieve rerank reranker score "
    "model models gpu cpu memory kubernetes ray serve deploy deployment stream "
    "streaming trace traces span spans jaeger error errors config yaml chunk "
    "chunks document documents embed embedder embedding answer question cat dog "
    "sat mat weather sunny rain paris france capital city"
)


def build_tiny_cross_encoder(path: Path) -> Path:
    """Save a random 2-layer BERT cross-encoder (num_labels=1) with a WordPiece
    tokenizer to `path`; deterministic for a given torch version."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    pieces = [*letters, *(f"##{c}" for c in letters), *".,?!-'/"]
    vocab_list = list(dict.fromkeys([*specials, *CROSS_ENCODER_TEXT.split(), *pieces]))
    vocab = {token: i for i, token in enumerate(vocab_list)}

    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=wordpiece, model_max_length=128, do_lower_case=True
    )

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        # Wide weights spread the scores, so order mistakes show in tests.
        initializer_range=0.5,
    )
    model = BertForSequenceClassification(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def downgrade_to_format_1(folder: Path) -> None:
    """Rewrite the index at `folder` as ragserve wrote it before versions:
    FAISS rows without an id map (row i = chunk i), no bm25/, a format-1
    manifest (no version, parent or changes)."""
    import hashlib
    import json
    import shutil

    import faiss

    index = faiss.read_index(str(folder / "index.faiss"))
    ids = faiss.vector_to_array(index.id_map)
    assert list(ids) == list(range(len(ids))), "a fresh build has ids 0..n-1"
    inner = faiss.downcast_index(index.index)
    plain = faiss.IndexFlatIP(index.d)
    plain.add(inner.reconstruct_n(0, inner.ntotal))
    faiss.write_index(plain, str(folder / "index.faiss"))
    shutil.rmtree(folder / "bm25")
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("version", "next_chunk_id", "parent", "changes"):
        manifest.pop(key, None)
    manifest["format_version"] = 1
    manifest["files"] = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("index.faiss", "chunks.jsonl")
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
