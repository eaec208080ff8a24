"""The releases one graph serves, each as the full config its nodes run with.

Knows how a release manifest overlays the graph's config (models, retrieval
settings, per-node deployments and batching, prompt template, index) and how
`ragserve serve --index` becomes a one-release graph; knows nothing of Ray.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from batching.config import deep_merge
from graph.config import RagServingArgs
from releases.config import FaultInjection
from releases.manifest import ReleaseManifest
from releases.registry import Registry

#: The release name of a graph started with `--index` (no registry).
IMPLICIT = "default"


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
