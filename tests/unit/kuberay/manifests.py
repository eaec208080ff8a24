"""Where the KubeRay manifests live, `kubectl kustomize` over them, and
accessors for the rendered RayService (groups, containers, serve config)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
KUBERAY = REPO / "kuberay"
GUIDE = REPO / "docs" / "kubernetes.md"
GPU = "nvidia.com/gpu"
GRAPH_NODES = {"ingress", "embedder", "retriever", "reranker", "generator"}
KUSTOMIZATIONS = sorted(
    p.parent.relative_to(REPO).as_posix() for p in KUBERAY.rglob("kustomization.yaml")
)
RAYSERVICE_DIRS = [d for d in KUSTOMIZATIONS if not d.endswith("monitoring")]
YAML_FILES = sorted(
    p.relative_to(REPO).as_posix()
    for p in KUBERAY.rglob("*")
    if p.suffix in (".yaml", ".yml")
)


class KustomizeError(RuntimeError):
    """`kubectl kustomize` is missing or refused a kustomization."""


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIR` builds (offline, no cluster)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise KustomizeError(
            "kubectl is not installed: `make test-tools` installs it "
            "(Debian package kubectl, with kustomize built in)"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def rayservice(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "RayService"]
    return found


def serve_config(rs: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rs["spec"]["serveConfigV2"])


def the_app(rs: dict[str, Any]) -> dict[str, Any]:
    (app,) = serve_config(rs)["applications"]
    return app


def groups(rs: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, group spec) for the head and each worker group."""
    cluster = rs["spec"]["rayClusterConfig"]
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group


def ray_containers(rs: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, group in groups(rs):
        spec = group["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            yield name, container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def resolve_import_path(import_path: str) -> Callable[..., Any]:
    module, _, attr = import_path.partition(":")
    builder = getattr(importlib.import_module(module), attr)
    assert callable(builder), f"{import_path} is not callable"
    return builder


@dataclass
class BoundDeployment:
    name: str
    num_cpus: float
    num_gpus: float
    min_replicas: int
    max_replicas: int


def bound_deployments(app: Any) -> dict[str, BoundDeployment]:
    """What `build_app` bound: each deployment's resources and replica range."""
    from ray.serve import Application

    found: dict[str, BoundDeployment] = {}

    def walk(application: Any) -> None:
        # Ray keeps the bound graph on private attributes (ray is pinned).
        deployment = application._bound_deployment
        options = deployment.ray_actor_options
        scaling = deployment._deployment_config.autoscaling_config
        if scaling is None:
            low = high = deployment.num_replicas
        else:
            low = max(scaling.min_replicas, scaling.initial_replicas or 0, 1)
            high = scaling.max_replicas
        found[deployment.name] = BoundDeployment(
            deployment.name,
            float(options.get("num_cpus", 1.0)),
            float(options.get("num_gpus", 0.0)),
            low,
            high,
        )
        for arg in (*deployment.init_args, *deployment.init_kwargs.values()):
            visit(arg)

    def visit(arg: Any) -> None:
        # The ingress takes its nodes per release, in a dict of dicts.
        if isinstance(arg, Application):
            walk(arg)
        elif isinstance(arg, dict):
            for value in arg.values():
                visit(value)
        elif isinstance(arg, list | tuple):
            for value in arg:
                visit(value)

    walk(app)
    return found


def create_image_releases(
    tmp: Path, index: Path, generator: Path, variant: str
) -> Path:
    """Run kuberay/releases/create.sh as the image build does, with `index` and
    `generator` for the image's own; returns the registry folder."""
    import os
    import sys

    registry = tmp / "registry"
    env = {
        **os.environ,
        "RAGSERVE": f"{sys.executable} -m graph.cli.main",
        "RAGSERVE_REGISTRY": str(registry),
        "RAGSERVE_AUDIT_LOG": str(tmp / "audit.jsonl"),
        "INDEX": str(index),
        "CONFIG": str(KUBERAY / "releases" / f"{variant}.yaml"),
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        ["sh", str(KUBERAY / "releases" / "create.sh"), "--generator", str(generator)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"create.sh failed: {done.stderr.strip()[-2000:]}")
    return registry
