"""How an index is built: chunking, FAISS index type, device, embedding batch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IndexBuildConfig(BaseModel):
    """Settings for `retrieval.index.build_index`."""

    model_config = ConfigDict(extra="forbid")

    chunk_size: int = Field(
        default=200,
        ge=16,
        description="Words per chunk (a chunk may end early at a "
        "paragraph or heading).",
    )
    chunk_overlap: int = Field(
        default=40,
        ge=0,
        description="Words repeated between consecutive chunks of one "
        "section; must be smaller than chunk_size.",
    )
    index_type: Literal["flat", "ivf", "hnsw"] = Field(
        default="flat",
        description="'flat': exact search; 'ivf': inverted lists (trained "
        "k-means, approximate, fast on large corpora); 'hnsw': graph search "
        "(approximate, CPU only).",
    )
    ivf_nlist: int | None = Field(
        default=None,
        ge=1,
        description="IVF lists; null: about 4*sqrt(chunks), capped so k-means "
        "has 39 points per list. Too few chunks for 1 list builds 'flat'.",
    )
    ivf_nprobe: int = Field(
        default=8,
        ge=1,
        description="IVF lists visited per query (stored in the index).",
    )
    hnsw_m: int = Field(default=32, ge=2, description="HNSW neighbours per node.")
    hnsw_ef_search: int = Field(
        default=64,
        ge=1,
        description="HNSW candidate list size per query (stored in the index); "
        "FAISS uses at least k.",
    )
    use_gpu: Literal["auto", "never", "always"] = Field(
        default="auto",
        description="'auto': FAISS on GPU when faiss has GPU support and a CUDA "
        "device is present; 'always': fail without one; 'never': CPU.",
    )
    embed_batch_size: int = Field(
        default=64, ge=1, description="Chunks per embedder call while building."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IndexBuildConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk_size ({self.chunk_size})"
            )
        return self
