"""Engine factories from config, shared by the deployments and the local wiring."""

from __future__ import annotations

from models.config import EmbedderConfig, GeneratorConfig, RerankerConfig
from models.embedder import Embedder, SentenceTransformerEmbedder
from models.generation import GenerationEngine
from models.reranker import CrossEncoderReranker, FusionReranker, Reranker
from models.threads import use_threads


def make_embedder(config: EmbedderConfig) -> Embedder:
    use_threads(config.threads)
    return SentenceTransformerEmbedder(
        config.model, device=config.device, batch_size=config.batch_size
    )


def make_reranker(
    config: RerankerConfig,
    embedder_config: EmbedderConfig,
    embedder: Embedder | None = None,
) -> Reranker:
    """The configured reranker; the fusion one reuses `embedder` when given
    (one process, one torch pool: the embedder's threads then hold)."""
    if embedder is None:
        use_threads(config.threads)
    if config.kind == "cross-encoder":
        assert config.model is not None  # RerankerConfig requires it
        return CrossEncoderReranker(
            config.model, device=config.device, max_batch_tokens=config.max_batch_tokens
        )
    if embedder is None:
        own = embedder_config.model_copy(update={"threads": config.threads})
        embedder = make_embedder(own)
    return FusionReranker(embedder, dense_weight=config.dense_weight)


def make_generator(
    config: GeneratorConfig, otlp_endpoint: str | None = None
) -> GenerationEngine:
    from models.vllm_engine import VLLMEngine

    return VLLMEngine(config, otlp_traces_endpoint=otlp_endpoint)
