"""The tenants' own app for the tenant tests: two ingress replicas with a
tenant store and audit log of their own in front of the session graph's
steps, and the helpers the tests share (adding a tenant, the ledger actor)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenants.records import Limits
from tenants.store import TenantStore
from tests.integration.conftest import graph_args

APP = "tenants"
WINDOW_S = 10.0  # the rpm window, shortened; load_tests/ shows a real minute


def deploy(
    serve_graph: dict[str, Any],
    docs_index: Path,
    tiny_llama: Path,
    tmp_path_factory: pytest.TempPathFactory,
    otlp_receiver: Any,
) -> Iterator[dict[str, Any]]:
    """Two ingress replicas of their own app, with a tenant store, in front of
    the session graph's step deployments (no second set of models); the
    session fixture `tgraph` (conftest) yields what this yields."""
    from ray import serve

    from graph.cli.server import APP_NAME
    from graph.config import RagServingArgs
    from graph.routing.served import load_served
    from graph.serve.builder import _plain
    from graph.serve.ingress import IngressDeployment
    from releases.traffic import TrafficState

    NODES = ("embedder", "retriever", "reranker", "generator")

    tmp = tmp_path_factory.mktemp("tenants")
    port = serve_graph["args"].server.port
    raw = graph_args(docs_index, tiny_llama, port, otlp_receiver.endpoint)
    raw["tenants"] = {
        "db": f"sqlite:///{tmp / 'tenants.db'}",
        "audit_log": str(tmp / "audit.jsonl"),
        "window_s": WINDOW_S,
        "refresh_s": 0.25,
    }
    args = RagServingArgs.load(raw)
    served = load_served(args)
    routes = {
        r.name: {n: serve.get_deployment_handle(n, app_name=APP_NAME) for n in NODES}
        for r in served
    }
    traffic = TrafficState.initial([r.name for r in served])
    ingress = IngressDeployment.options(  # type: ignore[attr-defined]
        name="ingress",
        num_replicas=2,
        ray_actor_options={"num_cpus": 0.01},
        user_config=traffic.model_dump(mode="json"),
    )
    serve.run(
        ingress.bind(routes, args, _plain(served)),
        name=APP,
        route_prefix=f"/{APP}",
        blocking=False,
    )
    url = serve_graph["url"] + f"/{APP}"
    deadline = time.time() + 300
    with httpx.Client(base_url=url, timeout=30) as c:
        while c.get("/ready").status_code != 200:
            assert time.time() < deadline, "tenant ingress not ready in 300 s"
            time.sleep(1)
    store = TenantStore(raw["tenants"]["db"])
    try:
        yield {
            "url": url,
            "store": store,
            "audit": tmp / "audit.jsonl",
            "tmp": tmp,
            "args": args,
        }
    finally:
        serve.delete(APP)
        store.close()


def add_tenant(tg: dict[str, Any], name: str, **limits: int) -> str:
    _, key = tg["store"].add(name, Limits(**limits))
    time.sleep(1.0)  # every replica re-reads the store within refresh_s
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref, timeout=60)


def ledger_actor() -> Any:
    """The tenant app's ledger (a named, detached actor)."""
    import ray

    from graph.gate.ledger_actor import NAMESPACE, actor_name

    return ray.get_actor(actor_name(APP), namespace=NAMESPACE)
