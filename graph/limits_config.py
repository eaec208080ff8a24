"""The `limits` config section: how much one request may hold.

Knows the limits and their defaults; the checks against a parsed request live
in `graph.api.limits`, the body-size one in `graph.api.body_limit`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LimitsConfig(BaseModel):
    """Per-request limits; each is answered with the OpenAI error envelope."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Request body bytes at most; larger bodies get 413 before "
        "they are read.",
    )
    max_messages: int = Field(
        256, ge=1, description="Messages per chat completion request."
    )
    max_text_chars: int = Field(
        100_000,
        ge=1,
        description="Characters per text: a message, a prompt, an embeddings "
        "input, a rerank document or query, a stop sequence.",
    )
    max_total_chars: int = Field(
        400_000, ge=1, description="Characters of all texts in one request."
    )
    max_embedding_inputs: int = Field(
        2048, ge=1, description="Inputs per embeddings request."
    )
    max_rerank_documents: int = Field(
        1000, ge=1, description="Documents per rerank request."
    )
    max_top_k: int = Field(
        100,
        ge=1,
        le=1000,
        description="Chunks a request may retrieve (`top_k`, `rag.top_k`).",
    )

    @model_validator(mode="after")
    def _text_within_total(self) -> LimitsConfig:
        if self.max_text_chars > self.max_total_chars:
            raise ValueError(
                f"limits.max_text_chars ({self.max_text_chars}) must not exceed "
                f"limits.max_total_chars ({self.max_total_chars})"
            )
        return self
