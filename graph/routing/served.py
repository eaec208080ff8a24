"""The releases one graph serves, each as the full config its nodes run with.

Knows how a release manifest overlays the graph's config (models, retrieval
settings, per-node deployments and batching, prompt template, index) and how
`ragserve serve --index` becomes a one-release graph; knows nothing of Ray.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from batching.config import deep_merge
from graph.config import RagServingArgs
from releases.config import FaultInjection
from releases.manifest import ReleaseManifest
from releases.registry import Registry

#: The release name of a graph started with `--index` (no registry).
IMPLICIT = "default"
#: The step deployments of each release (the ingress is the graph's own).
NODES = ("embedder", "retriever", "reranker", "generator")


@dataclass(frozen=True)
class ServedRelease:
    """One live release: its name, fingerprint and the config it runs with."""

    name: str
    id: str
    args: RagServingArgs
    fault: FaultInjection

    @property
    def fingerprint(self) -> str:
        return f"{self.name}@{self.id[:12]}"


def load_served(cfg: RagServingArgs, verify: bool = True) -> list[ServedRelease]:
    """The graph's releases, in `releases.serve` order (checked on disk first).

    Raises:
        ReleaseError: a release is unknown, or one of its artifacts is missing
            or changed (the message names it).
    """
    if not cfg.releases.serve:
        digest = hashlib.sha256(
            json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        return [ServedRelease(IMPLICIT, digest, cfg, cfg.releases.fault)]
    registry = Registry(cfg.releases.registry)
    out = []
    for name in cfg.releases.serve:
        manifest = registry.get(name)
        if verify:
            manifest.verify()
        out.append(release_args(cfg, manifest))
    return out


def release_args(cfg: RagServingArgs, manifest: ReleaseManifest) -> ServedRelease:
    """The graph config with the release's artifacts and settings laid over it."""
    settings = manifest.settings
    base = cfg.model_dump(mode="json")
    over: dict[str, Any] = {
        "models": {
            kind: manifest.artifacts[kind].details
            for kind in ("embedder", "reranker", "generator")
        },
        "retrieval": {
            **settings.get("retrieval", {}),
            "index_dir": manifest.artifacts["index"].path,
            "prompt_template": manifest.artifacts["prompt_template"].details["id"],
        },
        "batching": settings.get("batching", {}),
        "deployments": settings.get("deployments", {}),
    }
    merged = deep_merge(base, over)
    # A release's models replace the graph's wholesale: no field leaks across.
    merged["models"] = over["models"]
    args = RagServingArgs.load(merged)
    fault = FaultInjection.model_validate(settings.get("fault", {}))
    return ServedRelease(manifest.name, manifest.id, args, fault)


def node_keys(args: RagServingArgs) -> dict[str, str]:
    """Each node's identity: everything that makes its deployment differ."""
    m, b, d = args.models, args.batching, args.deployments
    embedder = _hash(m.embedder, b.embedder, d.embedder)
    return {
        "embedder": embedder,
        "retriever": _hash(
            args.retrieval.index_dir,
            args.retrieval.use_gpu,
            b.retriever,
            d.retriever,
            embedder,
        ),
        "reranker": _hash(m.reranker, m.embedder, b.reranker, d.reranker),
        "generator": _hash(m.generator, d.generator, args.telemetry),
    }


def deployment_names(served: list[ServedRelease]) -> dict[str, dict[str, str]]:
    """Each release's deployment name per node: releases whose node has the
    same identity share one deployment; a node with one identity in the whole
    graph keeps its plain name (`generator`), others get a key suffix."""
    keys = {r.name: node_keys(r.args) for r in served}
    distinct = Counter(
        node for node, _ in {(n, k[n]) for k in keys.values() for n in NODES}
    )
    return {
        release: {
            node: node if distinct[node] == 1 else f"{node}-{key[node][:8]}"
            for node in NODES
        }
        for release, key in keys.items()
    }


def _hash(*parts: Any) -> str:
    plain = [
        p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts
    ]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()
