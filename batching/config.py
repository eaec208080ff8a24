"""Batch settings: one node's `BatchConfig` and the per-node `BatchingConfig`.

The only place batch sizes and windows are set; the deployments' `serve.batch`
decorators take theirs from here when a replica starts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BatchConfig(BaseModel):
    """How one node groups concurrent requests (`ray.serve.batch`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="False runs each request alone (for benchmarks)."
    )
    max_batch_size: int = Field(16, ge=1, description="Requests per batch at most.")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="How long a batch waits to fill after its first request. "
        "0 (default): a lone request runs at once, and a batch is what queued "
        "while the model ran the previous one (TEI's way).",
    )


def merge_over_node_defaults(model: type[BaseModel], data: Any) -> Any:
    """For a `mode="before"` validator of a section whose fields are nodes with
    their own defaults: each partial node given (`embedder: {enabled: false}`)
    deep-merged over that node's default instead of replacing it (the graph's
    per-node sections use it too)."""
    if not isinstance(data, dict):
        return data
    merged = dict(data)
    for name, field in model.model_fields.items():
        given = data.get(name)
        if isinstance(given, dict) and field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
            merged[name] = deep_merge(default.model_dump(exclude_unset=True), given)
    return merged


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, nested dicts merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _node(max_batch_size: int) -> Any:
    return lambda: BatchConfig(max_batch_size=max_batch_size)


class BatchingConfig(BaseModel):
    """Per-node batching; a partial node in YAML (`embedder: {enabled: false}`)
    is merged over that node's defaults."""

    model_config = ConfigDict(extra="forbid")

    embedder: BatchConfig = Field(
        default_factory=_node(32), description="Embedder: texts per forward pass."
    )
    retriever: BatchConfig = Field(
        default_factory=_node(32), description="Retriever: queries per FAISS scan."
    )
    reranker: BatchConfig = Field(
        default_factory=_node(16), description="Reranker: requests per scoring pass."
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_over_node_defaults(cls, data: Any) -> Any:
        return merge_over_node_defaults(cls, data)

    def all_off(self) -> BatchingConfig:
        """Every batched node off (the honest "batching off" of benchmarks)."""
        off = {"enabled": False}
        return BatchingConfig(
            embedder=self.embedder.model_copy(update=off),
            retriever=self.retriever.model_copy(update=off),
            reranker=self.reranker.model_copy(update=off),
        )
