"""Tenants and releases together over the real HTTP app (no Ray): a tenant held
to some releases is routed among those only, and a tenant's requests stick
to one release, as docs/releases.md says."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from graph.api.app import ServingContext, create_app
from graph.config import RagServingArgs
from graph.gate.ledger_actor import LocalLedger
from graph.gate.tenancy import TenantGate
from graph.routing.router import LiveRelease, ReleaseRouter
from releases import traffic
from releases.canary import CanaryPolicy
from releases.traffic import TrafficState
from tenants.ledger import Ledger
from tenants.records import Limits
from tests.unit.test_release_routing import release_ctx

QUERY = {"query": "q"}


def test_within_scales_the_allowed_weights_to_100() -> None:
    weights = {"A": 30, "B": 20, "C": 50}
    assert traffic.within(weights, ("A", "B"), ["A", "B"]) == {"A": 60, "B": 40}
    assert traffic.within(weights, ("B",), ["B"]) == {"B": 100}
    # held to a release without weight: the usable ones, equally
    assert traffic.within({"A": 100}, ("B", "C"), ["B", "C"]) == {"B": 50, "C": 50}
    thirds = traffic.within({"A": 1, "B": 1, "C": 1}, ("A", "B", "C"), [])
    assert sum(thirds.values()) == 100 and sorted(thirds.values()) == [33, 33, 34]
    assert traffic.within({"A": 100}, ("Z",), []) == {}


class Routed:
    """Releases A (90), B (10), C (warming, 0) behind a tenant gate."""

    def __init__(self, tmp: Path) -> None:
        live = [
            LiveRelease("A", "a" * 64, release_ctx("a.md"), state="warm"),
            LiveRelease("B", "b" * 64, release_ctx("b.md"), state="warm"),
            LiveRelease("C", "c" * 64, release_ctx("c.md"), state="warming"),
        ]
        state = TrafficState.initial(["A", "B", "C"], {"A": 90, "B": 10})
        router = ReleaseRouter(live, state, CanaryPolicy(min_requests=5))
        args = RagServingArgs.load(
            {
                "tenants": {
                    "db": f"sqlite:///{tmp / 't.db'}",
                    "audit_log": str(tmp / "audit.jsonl"),
                }
            }
        )
        self.gate = TenantGate(args, LocalLedger(Ledger(window_s=60, slots=4)))
        first = router.releases["A"].ctx
        ctx = ServingContext(
            args=args,
            pipeline=first.pipeline,
            names=first.names,
            embed_with_usage=first.embed_with_usage,
            readiness=first.readiness,
            router=router,
            gate=self.gate,
        )
        self.client = TestClient(create_app(ctx), raise_server_exceptions=False)

    def key(self, name: str, releases: tuple[str, ...] | None = None) -> str:
        _, key = self.gate.store.add(name, Limits(), releases=releases)
        self.gate.directory.refresh()
        return key

    def releases(self, key: str, n: int = 30, sessions: bool = True) -> Counter:
        got: Counter[str] = Counter()
        for i in range(n):
            headers = {"Authorization": f"Bearer {key}"}
            if sessions:
                headers["x-session-id"] = f"s{i}"
            r = self.client.post("/v1/retrieve", json=QUERY, headers=headers)
            assert r.status_code == 200, r.text
            got[r.headers["x-ragserve-release"]] += 1
        return got


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[Routed]:
    r = Routed(tmp_path)
    yield r
    r.gate.close()


def test_a_tenant_held_to_releases_is_routed_among_them_only(routed: Routed) -> None:
    # B takes 10% of everyone's traffic, but all of this tenant's
    assert routed.releases(routed.key("beta", ("B",))) == Counter({"B": 30})
    # a release with no weight (still warming) is reached by its own tenant
    assert routed.releases(routed.key("early", ("C",))) == Counter({"C": 30})
    both = routed.releases(routed.key("both", ("A", "B")), n=200)
    assert set(both) == {"A", "B"} and both["B"] < both["A"]


def test_a_tenant_held_to_no_live_release_gets_404(routed: Routed) -> None:
    key = routed.key("gone", ("Z",))
    r = routed.client.post(
        "/v1/retrieve", json=QUERY, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "release_not_found"
    assert "Z" in r.json()["error"]["message"]


def test_a_tenants_requests_stick_to_one_release(routed: Routed) -> None:
    keys = [routed.key(f"t{i}") for i in range(12)]
    per_tenant = [routed.releases(k, n=5, sessions=False) for k in keys]
    assert all(len(c) == 1 for c in per_tenant)  # each tenant stays put
    assert {r for c in per_tenant for r in c} <= {"A", "B"}
