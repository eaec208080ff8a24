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
from graph.layout import INGRESS, Placement
from graph.routing.served import NODES, ServedRelease, deployment_names, load_served
from graph.serve.groups import STEP_CLASSES, LocalRef, StepGroupDeployment, StepSpec
from graph.serve.ingress import IngressDeployment
from models.threads import torch_process_env
from releases.traffic import TrafficState


def build_app(
    args: RagServingArgs | dict[str, Any] | str | Path | None = None,
) -> Application:
    """Compose each release's embedder, retriever, reranker and generator
    (one deployment per distinct artifact, or per step group of them: see
    `layout`) behind one ingress, which runs its own group's steps in-process.

    Args:
        args: a `RagServingArgs`, the dict KubeRay passes, a YAML path, or
            None for defaults.

    Returns:
        The Serve application, ready for `serve.run`.
    """
    cfg = RagServingArgs.load(args)
    served = load_served(cfg)
    names = deployment_names(served)
    placement = Placement.of(cfg.layout)
    bound: dict[str, Any] = {}
    routes: dict[str, dict[str, Any]] = {}
    for release in served:
        own = names[release.name]
        routes[release.name] = {}
        for node in NODES:
            name = placement.deployment_of(own, node)
            if name is None:  # inside the ingress: its spec, built there
                routes[release.name][node] = step_spec(
                    node, own[node], release.args, placement, bound, own
                )
                continue
            if name not in bound:
                bound[name] = _bind_group(
                    name, node, release.args, placement, bound, own
                )
            routes[release.name][node] = bound[name]
    traffic = TrafficState.initial(
        [r.name for r in served], cfg.releases.weights or None
    ).model_copy(update={"shadow": dict(cfg.releases.shadow)})
    return (
        _node(IngressDeployment)
        .options(
            **group_options(cfg, placement.group_of(INGRESS), INGRESS),
            user_config=traffic.model_dump(mode="json"),
        )
        .bind(routes, cfg, _plain(served))
    )


def _bind_group(
    name: str,
    node: str,
    cfg: RagServingArgs,
    placement: Placement,
    bound: dict[str, Any],
    names: dict[str, str],
) -> Any:
    """The deployment of `node`'s group: the step's own class when alone,
    else a `StepGroupDeployment` holding each member in-process."""
    group = placement.group_of(node)
    members = sorted(group, key=NODES.index)  # an embedder before its users
    specs = [step_spec(m, names[m], cfg, placement, bound, names) for m in members]
    options = group_options(cfg, group, name)
    if len(specs) == 1:
        spec = specs[0]
        return _node(STEP_CLASSES[node]).options(**options).bind(*spec.args)
    return _node(StepGroupDeployment).options(**options).bind(specs)


def step_spec(
    node: str,
    name: str,
    cfg: RagServingArgs,
    placement: Placement,
    bound: dict[str, Any],
    names: dict[str, str],
) -> StepSpec:
    """How to build `node`'s step: its class's constructor arguments, the
    retriever's embedder in-process when they share a group, else its handle."""
    models, telemetry = cfg.models, cfg.telemetry
    if node == "embedder":
        args: tuple[Any, ...] = (models.embedder, cfg.batching.embedder, telemetry)
    elif node == "retriever":
        if placement.group_of("embedder") == placement.group_of("retriever"):
            embedder: Any = LocalRef(names["embedder"])
        else:
            embedder = bound[str(placement.deployment_of(names, "embedder"))]
        args = (
            cfg.retrieval.index_dir,
            embedder,
            cfg.batching.retriever,
            cfg.retrieval.use_gpu,
            telemetry,
        )
    elif node == "reranker":
        args = (models.reranker, models.embedder, cfg.batching.reranker, telemetry)
    else:
        args = (models.generator, telemetry)
    return StepSpec(node, name, args)


def group_options(cfg: RagServingArgs, group: tuple[str, ...], name: str) -> dict:
    """Serve options of a group's deployment: the scaling and request limits
    of its first member, the CPUs, GPUs, memory, resources and environment of
    all its members together."""
    nodes = cfg.deployments
    lead = getattr(nodes, group[0])
    env: dict[str, str] = {}
    for member in group:
        env = {**_node_env(cfg, member), **getattr(nodes, member).env_vars, **env}
    options = lead.serve_options(name, extra_env=env)
    actor = options["ray_actor_options"]
    for member in group[1:]:
        own = getattr(nodes, member)
        actor["num_cpus"] += own.num_cpus
        actor["num_gpus"] += own.num_gpus
        if own.memory_bytes:
            actor["memory"] = actor.get("memory", 0) + own.memory_bytes
        for key, amount in own.resources.items():
            resources = actor.setdefault("resources", {})
            resources[key] = resources.get(key, 0) + amount
    gpu_faiss = "retriever" in group and cfg.retrieval.use_gpu == "always"
    if gpu_faiss and not actor["num_gpus"]:
        actor["num_gpus"] = RETRIEVER_GPU_FRACTION
    return options


def _node_env(cfg: RagServingArgs, node: str) -> dict[str, str]:
    models = cfg.models
    if node == "embedder":
        return torch_process_env(models.embedder.threads)
    if node == "reranker":
        return torch_process_env(models.reranker.threads)
    if node == "generator":
        return _generator_env(cfg)
    return {}


#: The GPU share the retriever asks for when FAISS must run on a GPU and its
#: deployment names none: Ray hides every GPU from a replica that asks none.
RETRIEVER_GPU_FRACTION = 0.1


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
