"""The resources `build_app` asks Ray for when FAISS is to run on a GPU."""

from __future__ import annotations

import pytest

from graph.serve.builder import RETRIEVER_GPU_FRACTION, build_app
from tests.unit.kuberay.manifests import bound_deployments


@pytest.mark.parametrize(
    ("use_gpu", "num_gpus", "asked"),
    [
        ("always", None, RETRIEVER_GPU_FRACTION),  # else Ray hides every GPU
        ("always", 0.5, 0.5),  # the deployment's own share wins
        ("auto", None, 0.0),
        ("never", None, 0.0),
    ],
)
def test_the_retriever_asks_for_a_gpu_share_when_faiss_must_use_one(
    use_gpu: str, num_gpus: float | None, asked: float
) -> None:
    args: dict = {"retrieval": {"use_gpu": use_gpu}, "layout": {"preset": "split"}}
    if num_gpus is not None:
        args["deployments"] = {"retriever": {"num_gpus": num_gpus}}

    bound = bound_deployments(build_app(args))

    assert bound["retriever"].num_gpus == asked
    assert bound["embedder"].num_gpus == 0.0
    # With every step in the ingress (`single`), the ingress asks for it.
    args["layout"] = {"preset": "single"}
    args.setdefault("deployments", {})["generator"] = {"num_gpus": 0}
    ingress = build_app(args)._bound_deployment
    assert ingress._replica_config.ray_actor_options.get("num_gpus", 0) == asked
