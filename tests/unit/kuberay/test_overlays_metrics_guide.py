"""The overlays against the base, the Prometheus monitors, and every command
in the deploy guide."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from graph.config import RagServingArgs
from tests.unit.kuberay.manifests import (
    GUIDE,
    KUBERAY,
    RAYSERVICE_DIRS,
    REPO,
    groups,
    ray_containers,
    rayservice,
    serve_config,
    the_app,
)

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
    # An overlay may serve releases; it adds no other section of its own.
    assert set(the_app(rs)["args"]) - {"releases"} <= set(the_app(base)["args"])


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
    from graph.cli.main import build_parser

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
