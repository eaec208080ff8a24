"""Step groups: the layout's rules, a group's Serve options, a step's spec,
and the in-process stream's cancel (no Ray; the steps themselves run in a
real graph in tests/integration/test_layouts.py)."""

from __future__ import annotations

import asyncio

import pytest

from graph.config import ConfigError, RagServingArgs
from graph.layout import LayoutConfig, Placement
from graph.serve.builder import group_options, step_spec
from graph.serve.groups import LocalRef, _LocalStream

NAMES = {n: n for n in ("embedder", "retriever", "reranker", "generator")}


def test_the_default_runs_every_step_in_the_ingress() -> None:
    placement = Placement.of(LayoutConfig())
    assert [placement.in_ingress(n) for n in NAMES] == [True] * 4
    assert placement.lead("embedder") == "generator"


def test_retrieval_in_ingress_keeps_the_generator_apart() -> None:
    placement = Placement.of(LayoutConfig(preset="retrieval-in-ingress"))
    assert [placement.in_ingress(n) for n in NAMES] == [True, True, True, False]
    assert placement.deployment_of(NAMES, "generator") == "generator"
    assert placement.deployment_of(NAMES, "embedder") is None
    assert placement.describe() == [
        ["ingress", "embedder", "retriever", "reranker"],
        ["generator"],
    ]


def test_split_gives_every_step_its_own_deployment() -> None:
    placement = Placement.of(LayoutConfig(preset="split"))
    assert [placement.deployment_of(NAMES, n) for n in NAMES] == list(NAMES)
    assert placement.describe() == [["ingress"], *[[n] for n in NAMES]]


def test_a_group_is_named_by_its_members_in_pipeline_order() -> None:
    layout = LayoutConfig(groups=[["reranker", "embedder", "retriever"]])
    names = {**NAMES, "embedder": "embedder-1a2b3c4d"}
    placement = Placement.of(layout)
    assert placement.deployment_of(names, "reranker") == (
        "embedder-1a2b3c4d+retriever+reranker"
    )
    assert placement.lead("embedder") == "reranker"
    assert placement.deployment_of(names, "generator") == "generator"


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["embedder"], ["embedder", "reranker"]], "more than one group"),
        ([[]], "at least one step"),
        ([["ingress", "embedder"]], "retriever must too"),
        ([["ingress", "indexer"]], "layout.groups"),
    ],
)
def test_a_bad_layout_is_refused_naming_it(groups: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RagServingArgs.load({"layout": {"groups": groups}})


def test_a_group_takes_its_leads_scaling_and_everyones_resources() -> None:
    cfg = RagServingArgs.load(
        {
            "layout": {"groups": [["generator", "ingress", "embedder", "retriever"]]},
            "deployments": {
                "generator": {"num_cpus": 1.0, "num_replicas": 1},
                "ingress": {"num_cpus": 0.05, "resources": {"head": 1}},
                "embedder": {"num_cpus": 0.2, "env_vars": {"A": "1"}},
            },
        }
    )
    group = ("generator", "ingress", "embedder", "retriever")
    options = group_options(cfg, group, "ingress")
    actor = options["ray_actor_options"]
    assert options["name"] == "ingress"
    assert options["num_replicas"] == 1  # the generator's, not the ingress's
    assert actor["num_cpus"] == pytest.approx(1.0 + 0.05 + 0.2 + 0.05)
    assert actor["resources"] == {"head": 1}
    env = actor["runtime_env"]["env_vars"]
    assert env["A"] == "1"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the generator's env
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # the embedder's torch threads


def test_the_retriever_gets_its_embedder_in_process_only_in_its_group() -> None:
    cfg = RagServingArgs.load({})
    together = Placement.of(LayoutConfig(preset="retrieval-in-ingress"))
    spec = step_spec("retriever", "retriever", cfg, together, {}, NAMES)
    assert spec.args[1] == LocalRef("embedder")
    apart = Placement.of(LayoutConfig(preset="split"))
    handle = object()
    spec = step_spec("retriever", "retriever", cfg, apart, {"embedder": handle}, NAMES)
    assert spec.args[1] is handle


async def test_a_local_stream_cancelled_closes_its_generator() -> None:
    closed = asyncio.Event()

    async def tokens():
        try:
            for i in range(100):
                yield [i]
                await asyncio.sleep(0)
        finally:
            closed.set()

    stream = _LocalStream(tokens())
    assert await anext(stream) == [0]
    stream.cancel()
    await asyncio.wait_for(closed.wait(), 2)
