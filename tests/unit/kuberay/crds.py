"""KubeRay's published CRDs as strict JSON Schemas, found beside the checkout.

The openAPIV3Schema of a CRD is what the API server applies to an object of
that kind; `kubectl apply` (server-side field validation, Strict since
Kubernetes 1.27) also rejects unknown fields. `strict_schema` makes a CRD's
structural schema say so in JSON Schema terms: objects with declared
properties admit no others, `nullable` admits null, and int32/int64 formats
bound integers. CEL rules (`x-kubernetes-validations`) are not evaluated; in
KubeRay v1.7.0 they only guard `managedBy` and immutability on update.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

KUBERAY_VERSION = "v1.7.0"
CRD_FILES = {
    "RayService": "ray.io_rayservices.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
}
#: Overrides the search (a folder holding `kuberay-crds/<version>/`).
SHARED_ENV = "RAGSERVE_SHARED_DIR"


class MissingCRDs(RuntimeError):
    """The CRD folder is nowhere the tests look for it."""


def crd_dir(start: Path) -> Path:
    """`shared/kuberay-crds/<version>` beside `start` or any folder above it.

    CI clones the project with `shared/` beside the clone (`../shared`); a git
    worktree nested deeper finds the same folder further up.
    """
    env = os.environ.get(SHARED_ENV)
    candidates = [Path(env)] if env else []
    candidates += [parent / "shared" for parent in start.resolve().parents]
    return find_crds(candidates)


def find_crds(candidates: list[Path]) -> Path:
    """The first of `candidates` (folders like `shared/`) holding the CRDs."""
    tried = []
    for shared in candidates:
        folder = shared / "kuberay-crds" / KUBERAY_VERSION
        tried.append(str(folder))
        if all((folder / name).is_file() for name in CRD_FILES.values()):
            return folder
    raise MissingCRDs(
        f"the KubeRay {KUBERAY_VERSION} CRDs ({', '.join(CRD_FILES.values())}) "
        f"are not in any of: {', '.join(tried)}; put shared/ beside the clone "
        f"or set {SHARED_ENV}"
    )


@functools.cache
def crd_schema(folder: Path, kind: str, version: str = "v1") -> dict[str, Any]:
    """The strict openAPIV3Schema of `kind` at API `version`."""
    crd = yaml.safe_load((folder / CRD_FILES[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind, crd["spec"]["names"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict_schema(served["schema"]["openAPIV3Schema"])


def strict_schema(node: Any) -> Any:
    """A structural CRD schema as JSON Schema with unknown fields refused."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: (
            {name: strict_schema(sub) for name, sub in value.items()}
            if key == "properties"
            else strict_schema(value)
        )
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key != "nullable"
    }
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def crd_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every violation, as `path: message` lines (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in errors
    ]


def raycluster_of(rayservice: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster a RayService makes KubeRay create (its rayClusterConfig)."""
    return {
        "apiVersion": rayservice["apiVersion"],
        "kind": "RayCluster",
        "metadata": {
            "name": f"{rayservice['metadata']['name']}-raycluster",
            "namespace": rayservice["metadata"].get("namespace", "default"),
        },
        "spec": copy.deepcopy(rayservice["spec"]["rayClusterConfig"]),
    }
