"""The releases the image carries and the overlay that serves them: the
releases pin the same graph as the manifests they stand for, the overlay's
weights are a traffic state over them, and the image build makes them."""

from __future__ import annotations

import pytest

from graph.config import RagServingArgs
from releases.registry import Registry
from releases.traffic import TrafficState
from tests.unit.kuberay.manifests import (
    KUBERAY,
    rayservice,
    the_app,
)

OVERLAY = "kuberay/overlays/dev-cpu-releases"
PINNED = ("models", "batching", "deployments")


@pytest.mark.parametrize(
    ("variant", "directory"),
    [("cpu", "kuberay/overlays/dev-cpu"), ("gpu", "kuberay/base")],
)
def test_image_releases_pin_the_graph_their_manifests_serve(
    variant, directory, rendered
):
    made = RagServingArgs.load(KUBERAY / "releases" / f"{variant}.yaml")
    served = RagServingArgs.load(the_app(rayservice(rendered[directory]))["args"])
    for section in PINNED:
        a, b = (
            getattr(made, section).model_dump(),
            getattr(served, section).model_dump(),
        )
        if section == "deployments":  # the ingress is the graph's, not a release's
            a.pop("ingress"), b.pop("ingress")
        assert a == b, f"kuberay/releases/{variant}.yaml {section} != {directory}"
    keep = {"top_k", "top_n", "rerank", "max_context_chars"}
    assert made.retrieval.model_dump(include=keep) == served.retrieval.model_dump(
        include=keep
    )


def test_overlay_weights_are_a_traffic_state_over_its_releases(
    rendered, image_registry
):
    app = the_app(rayservice(rendered[OVERLAY]))
    args = RagServingArgs.load(app["args"])
    (ingress,) = app["deployments"]
    state = TrafficState.model_validate(ingress["user_config"])

    assert ingress["name"] == "ingress" and set(ingress) == {"name", "user_config"}
    assert set(state.weights) <= set(args.releases.serve)
    assert sum(state.weights.values()) == 100 and state.stable in args.releases.serve
    registry = Registry(image_registry("cpu"))
    for name in args.releases.serve:
        registry.get(name).verify()
    # Two templates over one index and one set of models: nothing to key apart.
    a, b = (registry.get(n) for n in args.releases.serve)
    assert a.artifacts["index"] == b.artifacts["index"]
    assert a.artifacts["prompt_template"] != b.artifacts["prompt_template"]


def test_overlay_shares_every_deployment_between_its_releases(built):
    assert set(built(OVERLAY)) == {
        "ingress",
        "embedder",
        "retriever",
        "reranker",
        "generator",
    }


def test_the_image_build_makes_the_releases_where_the_overlay_reads_them(rendered):
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    ignore = (KUBERAY / "Dockerfile.dockerignore").read_text().splitlines()
    args = RagServingArgs.load(the_app(rayservice(rendered[OVERLAY]))["args"])

    assert (
        'CONFIG="kuberay/releases/${VARIANT}.yaml" sh kuberay/releases/create.sh'
        in (" ".join(dockerfile.split()))
    )
    assert 'RAGSERVE_REGISTRY="${RAGSERVE_CACHE_DIR}/releases"' in dockerfile
    assert "RAGSERVE_CACHE_DIR=/opt/ragserve/cache" in dockerfile
    assert args.releases.registry == "/opt/ragserve/cache/releases"
    # The build context drops kuberay/, all but the releases' own files.
    assert ignore.index("!kuberay/releases") > ignore.index("kuberay")
