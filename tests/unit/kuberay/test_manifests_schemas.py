"""Every kustomization as `kubectl kustomize` renders it, checked against the
Kubernetes JSON schemas (core kinds) and KubeRay v1.7.0's own CRD schemas
(RayService, and the RayCluster KubeRay makes from its rayClusterConfig)."""

from __future__ import annotations

import copy
import shutil
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.kuberay.crds import (
    MissingCRDs,
    crd_dir,
    crd_errors,
    crd_schema,
    find_crds,
    raycluster_of,
)
from tests.unit.kuberay.manifests import (
    KUBERAY,
    KUSTOMIZATIONS,
    RAYSERVICE_DIRS,
    REPO,
    YAML_FILES,
    KustomizeError,
    groups,
    kustomize,
    rayservice,
)

K8S_VERSION = "1.30.0"
CRD_KINDS = {"RayService", "PodMonitor"}


def test_every_yaml_file_under_kuberay_parses():
    assert len(YAML_FILES) >= 10
    for name in YAML_FILES:
        docs = [d for d in yaml.safe_load_all((REPO / name).read_text()) if d]
        assert docs, f"{name} is empty"
        assert all(isinstance(d, dict | list) for d in docs), name


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_every_kustomization(directory, rendered):
    kinds = {o["kind"] for o in rendered[directory]}
    if directory.endswith("monitoring"):
        assert kinds == {"PodMonitor", "ConfigMap"}
    else:
        assert {"Namespace", "RayService", "Deployment", "Service"} <= kinds
        # The overlays' namespace and image edits reached the RayService.
        rs = rayservice(rendered[directory])
        assert rs["metadata"]["namespace"] == "ragserve"


def test_a_json6902_test_operation_stops_an_overlay_on_a_reordered_base(tmp_path):
    shutil.copytree(KUBERAY, tmp_path / "kuberay")
    base = tmp_path / "kuberay" / "base" / "rayservice.yaml"
    rs = yaml.safe_load(base.read_text())
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"].reverse()
    base.write_text(yaml.safe_dump(rs))

    with pytest.raises(KustomizeError, match="test"):
        kustomize(tmp_path / "kuberay" / "overlays" / "dev-cpu")


def test_the_crds_are_found_and_a_missing_folder_says_where_it_looked(
    crds, tmp_path, monkeypatch
):
    assert crds.name == "v1.7.0"
    monkeypatch.delenv("RAGSERVE_SHARED_DIR", raising=False)
    assert crd_dir(crds.parents[2] / "clone") == crds  # shared/ beside the clone
    # Only the given folders: a shared/ higher up on this machine (e.g. /tmp/shared
    # beside a clone in /tmp) must not make the refusal untestable.
    with pytest.raises(MissingCRDs, match=r"ray\.io_rayservices\.yaml.*not in any"):
        find_crds([tmp_path / "shared"])


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(directory, rendered):
    checked = set()
    for obj in rendered[directory]:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked.add(obj["kind"])
    if directory.endswith("monitoring"):
        assert checked == {"ConfigMap"}  # the Grafana dashboard
    else:
        assert {"Namespace", "ConfigMap", "Deployment", "Service"} <= checked


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_rayservice_and_its_raycluster_validate_against_the_kuberay_crds(
    directory, rendered, crds
):
    rs = rayservice(rendered[directory])

    for kind, obj in (("RayService", rs), ("RayCluster", raycluster_of(rs))):
        errors = crd_errors(obj, crd_schema(crds, kind))
        assert not errors, f"{directory}: {kind}\n" + "\n".join(errors)


@pytest.mark.parametrize("directory", RAYSERVICE_DIRS)
def test_ray_pod_templates_are_valid_pod_templates(directory, rendered):
    rs = rayservice(rendered[directory])
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


def _worker(rs: dict[str, Any]) -> dict[str, Any]:
    return rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


def _drift_misspelt_worker_field(rs: dict[str, Any]) -> str:
    group = _worker(rs)
    group["maxReplica"] = group.pop("maxReplicas")
    return "Additional properties are not allowed ('maxReplica' was unexpected)"


def _drift_string_replicas(rs: dict[str, Any]) -> str:
    _worker(rs)["maxReplicas"] = "4"
    return "workerGroupSpecs.0.maxReplicas: '4' is not of type 'integer'"


def _drift_unquoted_ray_start_param(rs: dict[str, Any]) -> str:
    rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    return "rayStartParams.num-cpus: 0 is not of type 'string'"


def _drift_misspelt_spec_field(rs: dict[str, Any]) -> str:
    rs["spec"]["rayClusterConfig"]["workerGroupSpec"] = []
    return "('workerGroupSpec' was unexpected)"


def _drift_int32_overflow(rs: dict[str, Any]) -> str:
    _worker(rs)["replicas"] = 2**31
    return "is not a 'int32'"


@pytest.mark.parametrize(
    "drift",
    [
        _drift_misspelt_worker_field,
        _drift_string_replicas,
        _drift_unquoted_ray_start_param,
        _drift_misspelt_spec_field,
        _drift_int32_overflow,
    ],
)
def test_crd_validation_names_a_drifted_field(drift, rendered, crds):
    rs = copy.deepcopy(rayservice(rendered["kuberay/base"]))
    wanted = drift(rs)

    for kind, obj in (("RayService", rs), ("RayCluster", raycluster_of(rs))):
        errors = crd_errors(obj, crd_schema(crds, kind))
        assert any(wanted in e for e in errors), (kind, errors)
