"""What the RayServices serve: the app their args build, and worker groups
that hold every replica it binds."""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from graph.config import RagServingArgs
from tests.unit.kuberay.manifests import (
    GPU,
    GRAPH_NODES,
    RAYSERVICE_DIRS,
    groups,
    ray_containers,
    rayservice,
    resolve_import_path,
    serve_config,
    the_app,
)


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_serve_config_args_load_and_build_the_whole_graph(directory, rendered, built):
    import ray

    rs = rayservice(rendered[directory])
    config = serve_config(rs)
    app = the_app(rs)

    args = RagServingArgs.load(app["args"])
    assert app["import_path"] == "graph.serve.builder:build_app"
    assert resolve_import_path(app["import_path"]).__module__ == "graph.serve.builder"
    assert (app["name"], app["route_prefix"]) == ("ragserve", "/")
    assert config["http_options"]["port"] == 8000
    for name, container in ray_containers(rs):
        serve_ports = [p for p in container.get("ports", []) if p["name"] == "serve"]
        # KubeRay's serve Service targets the container port named "serve".
        assert [p["containerPort"] for p in serve_ports] in ([], [8000]), name
    ray_was_up = ray.is_initialized()  # a whole-suite run may share one Ray
    deployments = built(directory)
    assert ray.is_initialized() == ray_was_up, "building the app must not start Ray"
    assert set(deployments) == GRAPH_NODES
    for node in GRAPH_NODES:
        assert deployments[node].num_gpus == getattr(args.deployments, node).num_gpus


def test_an_unknown_arg_fails_as_the_cluster_would_fail_it(rendered):
    from graph.config import ConfigError

    args = copy.deepcopy(the_app(rayservice(rendered["kuberay/base"]))["args"])
    args["retrieval"]["top_kk"] = 5

    with pytest.raises(ConfigError, match=r"retrieval\.top_kk: unknown config key"):
        resolve_import_path("graph.serve.builder:build_app")(args)


# --- resources: the groups must hold the graph -----------------------------


def quantity(value: Any) -> float:
    """A Kubernetes CPU or count quantity ("4", "500m", 2) as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def container_limit(group: dict[str, Any], resource: str) -> float:
    limits = group["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    return quantity(limits.get(resource, 0))


@dataclass
class Pod:
    group: str
    cpus: float
    gpus: list[float] = field(default_factory=list)  # free share of each GPU

    def take(self, cpus: float, gpus: float) -> bool:
        if self.cpus + 1e-9 < cpus:
            return False
        if gpus >= 1:
            free = [i for i, share in enumerate(self.gpus) if share >= 1 - 1e-9]
            if len(free) < gpus:
                return False
            for i in free[: int(gpus)]:
                self.gpus[i] = 0.0
        elif gpus > 0:
            fits = [i for i, share in enumerate(self.gpus) if share + 1e-9 >= gpus]
            if not fits:
                return False
            self.gpus[fits[0]] -= gpus
        self.cpus -= cpus
        return True


def cluster_at_most(rs: dict[str, Any]) -> list[Pod]:
    """Every pod the groups may grow to: CPU workers, then GPU workers, then head."""
    pods = []
    for name, group in groups(rs):
        params = group["rayStartParams"]
        cpus = float(params.get("num-cpus", math.ceil(container_limit(group, "cpu"))))
        gpus = int(params.get("num-gpus", container_limit(group, GPU)))
        count = 1 if name == "head" else group["maxReplicas"]
        pods += [Pod(name, cpus, [1.0] * gpus) for _ in range(count)]
    return sorted(pods, key=lambda p: (p.group == "head", bool(p.gpus)))


def unplaced(rs: dict[str, Any], replicas: dict[str, tuple[int, float, float]]):
    """Place replicas biggest-GPU-first, as Ray would; describe what is left over.

    Returns "" when every replica finds a pod within the groups' maxReplicas.
    """
    pods = cluster_at_most(rs)
    wanted = [
        (name, cpus, gpus)
        for name, (count, cpus, gpus) in replicas.items()
        for _ in range(count)
    ]
    left: Counter[str] = Counter()
    for name, cpus, gpus in sorted(wanted, key=lambda r: (-r[2], -r[1])):
        if not any(pod.take(cpus, gpus) for pod in pods if pod.gpus or not gpus):
            left[name] += 1
    if not left:
        return ""
    need = [sum(r[i] for r in wanted) for i in (1, 2)]
    empty = cluster_at_most(rs)
    have = [sum(p.cpus for p in empty), sum(len(p.gpus) for p in empty)]
    return (
        f"replicas need {need[0]:g} CPU and {need[1]:g} GPU, the groups at "
        f"maxReplicas give {have[0]:g} CPU and {have[1]} GPU; no pod for "
        + ", ".join(f"{n} x{k}" for n, k in sorted(left.items()))
    )


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_gpu_groups_declare_the_gpus_their_containers_get(directory, rendered):
    rs = rayservice(rendered[directory])
    for name, group in groups(rs):
        resources = group["template"]["spec"]["containers"][0]["resources"]
        limit = container_limit(group, GPU)
        params = group["rayStartParams"]
        assert float(params.get("num-gpus", limit)) == limit, (
            f"{name}: rayStartParams num-gpus {params.get('num-gpus')} but the "
            f"container's {GPU} limit is {limit}"
        )
        if GPU in resources.get("requests", {}):
            assert quantity(resources["requests"][GPU]) == limit, name
        if "num-cpus" in params and "cpu" in resources.get("limits", {}):
            assert float(params["num-cpus"]) <= container_limit(group, "cpu"), name


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_worker_groups_hold_every_replica_at_min_and_at_max(directory, rendered, built):
    rs = rayservice(rendered[directory])
    deployments = built(directory).values()
    groups_with_gpus = {
        name: container_limit(g, GPU) for name, g in groups(rs) if name != "head"
    }
    for d in deployments:
        if d.num_gpus > 0:
            assert any(n >= math.ceil(d.num_gpus) for n in groups_with_gpus.values()), (
                f"{d.name} asks for {d.num_gpus} GPU per replica; worker groups "
                f"give {groups_with_gpus}"
            )

    at_min = {d.name: (d.min_replicas, d.num_cpus, d.num_gpus) for d in deployments}
    at_max = {d.name: (d.max_replicas, d.num_cpus, d.num_gpus) for d in deployments}
    left = unplaced(rs, at_min)
    assert not left, f"at min_replicas the app can never become ready: {left}"
    left = unplaced(rs, at_max)
    assert not left, f"at max_replicas autoscaling would stall: {left}"


def test_a_gpu_group_below_the_generators_num_gpus_is_caught(rendered, built):
    rs = copy.deepcopy(rayservice(rendered["kuberay/overlays/prod-gpu"]))
    for _, group in groups(rs):
        group["rayStartParams"].pop("num-gpus", None)
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        if GPU in limits:
            limits[GPU] = "1"
    generator = built("kuberay/overlays/prod-gpu")["generator"]
    replicas = {"generator": (generator.min_replicas, generator.num_cpus, 2.0)}

    assert unplaced(rs, replicas)


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_head_runs_ray_only_and_no_replica(directory, rendered, built):
    rs = rayservice(rendered[directory])
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]

    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    assert container_limit(head, GPU) == 0
    for d in built(directory).values():
        assert d.num_cpus > 0 or d.num_gpus > 0, (
            f"{d.name} reserves no CPU or GPU, so Ray may place it on the head"
        )


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_autoscaling_is_on_and_idle_pods_are_released(directory, rendered):
    cluster = rayservice(rendered[directory])["spec"]["rayClusterConfig"]

    assert cluster["enableInTreeAutoscaling"] is True
    assert 60 <= cluster["autoscalerOptions"]["idleTimeoutSeconds"] <= 3600
    for group in cluster["workerGroupSpecs"]:
        timeout = group.get("idleTimeoutSeconds", 60)
        assert 60 <= timeout <= 3600, group["groupName"]
