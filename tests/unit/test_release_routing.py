"""Release routing in the HTTP layer (no Ray): pins, sticky sessions, names on
every answer, admin changes validated before anything changes, the canary
judge; plus the release CLI's bad input."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from graph.api.app import ModelNames, ServingContext, create_app
from graph.cli.main import main
from graph.config import RagServingArgs
from graph.pipeline import RagPipeline, Steps
from graph.prompts import get_template
from graph.routing.router import LiveRelease, ReleaseRouter
from models.generation import Chunk, GenerationRequest
from releases.canary import CanaryPolicy
from releases.traffic import TrafficState
from retrieval.types import Hit


def release_ctx(doc: str) -> ServingContext:
    async def embed(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32)

    async def retrieve(vectors: np.ndarray, k: int, *_: object) -> list[list[Hit]]:
        return [[Hit(0, doc, f"text of {doc}", 1.0, None)] for _ in vectors]

    async def rerank(q: str, p: list[str], d: list[float] | None = None) -> list[float]:
        return [1.0 for _ in p]

    async def generate(request: GenerationRequest) -> AsyncIterator[Chunk]:
        yield Chunk(text="hi", finish_reason="stop", prompt_tokens=3)

    async def embed_with_usage(texts: list[str]) -> tuple[np.ndarray, int]:
        return await embed(texts), 1

    async def readiness() -> dict[str, str]:
        return {"generator": "ready"}

    return ServingContext(
        args=RagServingArgs(),
        pipeline=RagPipeline(
            Steps(embed, retrieve, rerank, generate), get_template("rag-v1"), 1000
        ),
        names=ModelNames("m", "e", "r", 512),
        embed_with_usage=embed_with_usage,
        readiness=readiness,
    )


@pytest.fixture
def router() -> ReleaseRouter:
    live = [
        LiveRelease("A", "a" * 64, release_ctx("a.md"), state="warm"),
        LiveRelease("B", "b" * 64, release_ctx("b.md"), state="warm"),
        LiveRelease("C", "c" * 64, release_ctx("c.md"), state="warming"),
    ]
    state = TrafficState.initial(["A", "B", "C"], {"A": 90, "B": 10})
    return ReleaseRouter(live, state, CanaryPolicy(min_requests=5))


@pytest.fixture
def client(router: ReleaseRouter) -> TestClient:
    return routed_client(router)


def routed_client(router: ReleaseRouter, first_release: str = "A") -> TestClient:
    """The HTTP app over `router`'s releases (no Ray)."""
    first = router.releases[first_release].ctx
    ctx = ServingContext(
        args=first.args,
        pipeline=first.pipeline,
        names=first.names,
        embed_with_usage=first.embed_with_usage,
        readiness=first.readiness,
        router=router,
    )
    return TestClient(create_app(ctx), raise_server_exceptions=False)


CHAT = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 1}


def test_pin_sticky_and_names_on_answers(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-ragserve-release": "B"}
    )
    assert r.headers["x-ragserve-release"] == "B"
    assert r.json()["system_fingerprint"] == "B@" + "b" * 12
    assert r.json()["citations"][0]["doc_id"] == "b.md"
    stream = client.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"x-ragserve-release": "A"},
    )
    chunks = [
        json.loads(line[6:])
        for line in stream.text.splitlines()
        if line.startswith("data: {")
    ]
    assert chunks and {c["system_fingerprint"] for c in chunks} == {"A@" + "a" * 12}
    bad = client.post(
        "/v1/retrieve", json={"query": "q"}, headers={"x-ragserve-release": "Z"}
    )
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "release_not_found"
    same = {
        client.post(
            "/v1/retrieve", json={"query": "q"}, headers={"x-session-id": "s1"}
        ).headers["x-ragserve-release"]
        for _ in range(20)
    }
    assert len(same) == 1
    counts = Counter(
        client.post(
            "/v1/retrieve", json={"query": "q"}, headers={"x-session-id": f"s{i}"}
        ).headers["x-ragserve-release"]
        for i in range(300)
    )
    assert set(counts) == {"A", "B"} and 15 <= counts["B"] <= 45
    models = client.get("/v1/models").json()
    assert [r["weight"] for r in models["releases"]] == [90, 10, 0]


def test_admin_changes_are_checked_first(client: TestClient, router) -> None:
    before = client.get("/admin/traffic").json()
    for body, status, needle in (
        ({"weights": {"A": 50, "B": 10}}, 400, "sum to 100"),
        ({"weights": {"A": 90, "C": 10}}, 409, "not warm yet (warming)"),
        ({"weights": {"A": 100}, "shadow": {"A": 5}}, 409, "already takes all"),
        ({"weights": {"A": 110, "B": -10}}, 400, "less than or equal to 100"),
        ({"weights": {}}, 400, "at least 1 item"),
        ({"weights": {"A": 90, "Z": 10}}, 400, "'Z' is not live"),
    ):
        r = client.post("/admin/traffic", json=body)
        assert r.status_code == status, r.text
        assert needle in r.json()["error"]["message"], r.text
    assert client.get("/admin/traffic").json() == before
    r = client.post("/admin/promote", json={"release": "B"})
    assert r.status_code == 200 and router.state.weights["B"] == 100
    assert client.post("/admin/rollback").json()["stable"] == "A"
    r = client.post("/admin/rollback")
    assert (
        r.status_code == 409 and "nothing to roll back" in r.json()["error"]["message"]
    )
    assert client.post("/admin/promote", json={"release": "A"}).status_code == 409
    assert client.post("/admin/promote", json={"release": ""}).status_code == 400


async def test_judge_takes_a_slow_canarys_weight(router: ReleaseRouter) -> None:
    for _ in range(10):
        router.record("A", True, 100.0, 50.0)
        router.record("B", True, 900.0, 800.0)
    await router.judge_once()
    assert router.state.weights == {"A": 100, "B": 0, "C": 0}
    assert "p95" in router.state.reasons["B"]
    assert router.describe()["releases"][1]["reason"] == router.state.reasons["B"]


def test_release_cli_bad_input(tmp_path, capsys) -> None:
    reg = ["--registry", str(tmp_path / "reg")]
    for argv, needle in (
        (["release", "show", "nope", *reg], "no release 'nope'"),
        (["release", "diff", "a", "b", *reg], "no release 'a'"),
        (
            ["release", "create", "bad name", "--index", str(tmp_path), *reg],
            "release name",
        ),
        (["release", "create", "A", "--index", str(tmp_path / "none"), *reg], "index"),
        (
            ["traffic", "set", "A=90", "B=5", "--address", "http://127.0.0.1:9"],
            "cannot reach",
        ),
        (["traffic", "set", "A=x"], "whole percent"),
    ):
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (argv, err)
        assert lines[0].startswith("ragserve: error: ") and needle in lines[0], lines[0]
    assert not (tmp_path / "reg").exists()
