"""`build_app(args)`: the only place that binds the graph.

KubeRay's `serveConfigV2` names it as `import_path: graph.builder:build_app`
and passes `args:` in the `RagServingArgs` schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from graph.config import RagServingArgs
from graph.deployments import (
    EmbedderDeployment,
    GeneratorDeployment,
    RerankerDeployment,
    RetrieverDeployment,
)
from graph.ingress import IngressDeployment
from models.threads import torch_process_env


def build_app(
    args: RagServingArgs | dict[str, Any] | str | Path | None = None,
) -> Application:
    """Compose embedder, retriever, reranker and generator behind the ingress.

    Args:
        args: a `RagServingArgs`, the dict KubeRay passes, a YAML path, or
            None for defaults.

    Returns:
        The Serve application, ready for `serve.run`.
    """
    cfg = RagServingArgs.load(args)
    nodes = cfg.deployments
    models = cfg.models
    telemetry = cfg.telemetry
    embedder = (
        _node(EmbedderDeployment)
        .options(
            **nodes.embedder.serve_options(
                "embedder", extra_env=torch_process_env(models.embedder.threads)
            )
        )
        .bind(models.embedder, cfg.batching.embedder, telemetry)
    )
    retriever = (
        _node(RetrieverDeployment)
        .options(**_retriever_options(cfg))
        .bind(
            cfg.retrieval.index_dir,
            embedder,
            cfg.batching.retriever,
            cfg.retrieval.use_gpu,
            telemetry,
        )
    )
    reranker = (
        _node(RerankerDeployment)
        .options(
            **nodes.reranker.serve_options(
                "reranker", extra_env=torch_process_env(models.reranker.threads)
            )
        )
        .bind(models.reranker, models.embedder, cfg.batching.reranker, telemetry)
    )
    generator = (
        _node(GeneratorDeployment)
        .options(
            **nodes.generator.serve_options("generator", extra_env=_generator_env(cfg))
        )
        .bind(models.generator, telemetry)
    )
    return (
        _node(IngressDeployment)
        .options(**nodes.ingress.serve_options("ingress"))
        .bind(embedder, retriever, reranker, generator, cfg)
    )


#: The GPU share the retriever asks for when FAISS must run on a GPU and its
#: deployment names none: Ray hides every GPU from a replica that asks none.
RETRIEVER_GPU_FRACTION = 0.1


def _retriever_options(cfg: RagServingArgs) -> dict[str, Any]:
    options = cfg.deployments.retriever.serve_options("retriever")
    actor = options["ray_actor_options"]
    if cfg.retrieval.use_gpu == "always" and not actor["num_gpus"]:
        actor["num_gpus"] = RETRIEVER_GPU_FRACTION
    return options


def _generator_env(cfg: RagServingArgs) -> dict[str, str]:
    env = dict(cfg.models.generator.env)
    # vLLM's own exporter reads the protocol from the environment only.
    if cfg.telemetry.otlp_protocol:
        env.setdefault(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", cfg.telemetry.otlp_protocol
        )
    return env


def _node(deployment: Any) -> Any:
    # `@serve.deployment` turns each class into a `Deployment`; mypy, which
    # does not follow Ray, still sees the class.
    return deployment
