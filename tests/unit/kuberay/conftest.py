"""Fixtures for the KubeRay checks: every kustomization rendered once by real
`kubectl kustomize`, the KubeRay CRDs, and each RayService's app as built."""

from __future__ import annotations

import copy
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
    create_image_releases,
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
def image_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """The registry an image of `variant` carries, made by the image's own
    kuberay/releases/create.sh over the test index and tiny model (cached)."""
    made: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in made:
            tmp = tmp_path_factory.mktemp(f"image-registry-{variant}")
            made[variant] = create_image_releases(
                tmp,
                request.getfixturevalue("docs_index"),
                request.getfixturevalue("tiny_llama"),
                variant,
            )
        return made[variant]

    return make


@pytest.fixture(scope="session")
def built(rendered, image_registry) -> Callable[[str], dict[str, BoundDeployment]]:
    """Build a RayService's app through its own import_path (cached); one that
    serves releases gets the registry its image would carry."""
    from ray.serve import Application

    cache: dict[str, dict[str, BoundDeployment]] = {}

    def build(directory: str) -> dict[str, BoundDeployment]:
        if directory not in cache:
            app = the_app(rayservice(rendered[directory]))
            args = copy.deepcopy(app["args"])
            if args.get("releases", {}).get("serve"):
                variant = "cpu" if "cpu" in directory else "gpu"
                args["releases"]["registry"] = str(image_registry(variant))
            application = resolve_import_path(app["import_path"])(args)
            assert isinstance(application, Application)
            cache[directory] = bound_deployments(application)
        return cache[directory]

    return build
