"""Fixtures for the KubeRay checks: every kustomization rendered once by real
`kubectl kustomize`, the KubeRay CRDs, and each RayService's app as built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kuberay.crds import MissingCRDs, crd_dir
from tests.unit.kuberay.manifests import (
    KUSTOMIZATIONS,
    REPO,
    BoundDeployment,
    KustomizeError,
    bound_deployments,
    kustomize,
    rayservice,
    resolve_import_path,
    the_app,
)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """`kubectl kustomize` of every kustomization under kuberay/ (fails clearly
    when kubectl is missing: CI installs it with `make test-tools`)."""
    try:
        return {d: kustomize(REPO / d) for d in KUSTOMIZATIONS}
    except KustomizeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def crds() -> Path:
    """The folder of KubeRay's published CRDs (`../shared/kuberay-crds/...`)."""
    try:
        return crd_dir(REPO)
    except MissingCRDs as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
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
