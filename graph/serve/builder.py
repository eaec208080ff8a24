"""`build_app(args)`: the only place that binds the graph.

KubeRay's `serveConfigV2` names it as `import_path: graph.serve.builder:build_app`
and passes `args:` in the `RagServingArgs` schema. Deployments are keyed by
artifact identity, not by release: releases that share an embedder, index,
reranker or generator share that deployment (and its memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from graph.config import RagServingArgs
from graph.routing.served import NODES, ServedRelease, deployment_names, load_served
from graph.serve.deployments import (
    EmbedderDeployment,
    RerankerDeployment,
    RetrieverDeployment,
)
from graph.serve.generator_deployment import GeneratorDeployment
from graph.serve.ingress import IngressDeployment
from models.threads import torch_process_env
from releases.traffic import TrafficState


def build_app(
    args: RagServingArgs | dict[str, Any] | str | Path | None = None,
) -> Application:
    """Compose each release's embedder, retriever, reranker and generator
    (one deployment per distinct artifact) behind one ingress.

    Args:
        args: a `RagServingArgs`, the dict KubeRay passes, a YAML path, or
            None for defaults.

    Returns:
        The Serve application, ready for `serve.run`.
    """
    cfg = RagServingArgs.load(args)
    served = load_served(cfg)
    names = deployment_names(served)
    bound: dict[str, Any] = {}
    routes: dict[str, dict[str, Any]] = {}
    for release in served:
        routes[release.name] = {}
        for node in NODES:
            name = names[release.name][node]
            if name not in bound:
                bound[name] = _bind(
                    node, name, release.args, bound, names[release.name]
                )
            routes[release.name][node] = bound[name]
    traffic = TrafficState.initial(
        [r.name for r in served], cfg.releases.weights or None
    ).model_copy(update={"shadow": dict(cfg.releases.shadow)})
    return (
        _node(IngressDeployment)
        .options(
            **cfg.deployments.ingress.serve_options("ingress"),
            user_config=traffic.model_dump(mode="json"),
        )
        .bind(routes, cfg, _plain(served))
    )


def _bind(
    node: str,
    name: str,
    cfg: RagServingArgs,
    bound: dict[str, Any],
    names: dict[str, str],
) -> Any:
    nodes, models, telemetry = cfg.deployments, cfg.models, cfg.telemetry
    if node == "embedder":
        return (
            _node(EmbedderDeployment)
            .options(
                **nodes.embedder.serve_options(
                    name, extra_env=torch_process_env(models.embedder.threads)
                )
            )
            .bind(models.embedder, cfg.batching.embedder, telemetry)
        )
    if node == "retriever":
        embedder = bound[names["embedder"]]
        return (
            _node(RetrieverDeployment)
            .options(**_retriever_options(cfg, name))
            .bind(
                cfg.retrieval.index_dir,
                embedder,
                cfg.batching.retriever,
                cfg.retrieval.use_gpu,
                telemetry,
            )
        )
    if node == "reranker":
        return (
            _node(RerankerDeployment)
            .options(
                **nodes.reranker.serve_options(
                    name, extra_env=torch_process_env(models.reranker.threads)
                )
            )
            .bind(models.reranker, models.embedder, cfg.batching.reranker, telemetry)
        )
    return (
        _node(GeneratorDeployment)
        .options(**nodes.generator.serve_options(name, extra_env=_generator_env(cfg)))
        .bind(models.generator, telemetry)
    )


#: The GPU share the retriever asks for when FAISS must run on a GPU and its
#: deployment names none: Ray hides every GPU from a replica that asks none.
RETRIEVER_GPU_FRACTION = 0.1


def _retriever_options(cfg: RagServingArgs, name: str) -> dict[str, Any]:
    options = cfg.deployments.retriever.serve_options(name)
    actor = options["ray_actor_options"]
    if cfg.retrieval.use_gpu == "always" and not actor["num_gpus"]:
        actor["num_gpus"] = RETRIEVER_GPU_FRACTION
    return options


def _plain(served: list[ServedRelease]) -> list[dict[str, Any]]:
    # What the ingress needs per release, as plain data (pickled to replicas).
    return [
        {
            "name": r.name,
            "id": r.id,
            "args": r.args.model_dump(mode="json"),
            "fault": r.fault.model_dump(mode="json"),
        }
        for r in served
    ]


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
