"""Retirement after the grace period (no Ray): when a release's grace period
starts and ends, which deployments park, the Serve overrides that park and
unpark them, and the refusals a retired release gives."""

from __future__ import annotations

import time

import pytest

from graph.routing.router import LiveRelease, ReleaseRouter
from graph.serve.serve_config import PARKED_SCALE, deployment_overrides, plan_update
from releases import traffic as policy
from releases.canary import CanaryPolicy
from releases.errors import TrafficError
from releases.traffic import TrafficState
from tests.unit.test_release_routing import CHAT, release_ctx, routed_client

WARM = {"A": "warm", "B": "warm"}


def test_grace_period_starts_when_the_last_traffic_goes() -> None:
    s0 = TrafficState.initial(["A", "B"], {"A": 90, "B": 10})
    s1 = policy.stamp_idle(s0, policy.set_weights(s0, {"A": 100}, None, WARM), 100.0)
    assert s1.idle_since == {"B": 100.0}
    # Still no traffic later: the clock is not reset.
    s2 = policy.stamp_idle(s1, policy.set_weights(s1, {"A": 100}, None, WARM), 200.0)
    assert s2.idle_since == {"B": 100.0}
    # A shadow share is traffic too.
    s3 = policy.stamp_idle(
        s2, policy.set_weights(s2, {"A": 100}, {"B": 5}, WARM), 300.0
    )
    assert s3.idle_since == {}
    # Never given traffic (served at 0 from the start): no grace period runs.
    fresh = TrafficState.initial(["A", "B"])
    assert policy.stamp_idle(fresh, fresh, 5.0).idle_since == {}
    assert policy.due_for_retirement(s1, 60, 159.0) == []
    assert policy.due_for_retirement(s1, 60, 160.0) == ["B"]
    # No release takes all traffic: A stays stable at 0%, and never retires.
    s4 = TrafficState.initial(["A", "B", "C"], {"A": 100})
    s5 = policy.set_weights(s4, {"B": 50, "C": 50}, None, {**WARM, "C": "warm"})
    s5 = policy.stamp_idle(s4, s5, 0.0)
    assert s5.stable == "A" and s5.idle_since == {"A": 0.0}
    assert policy.due_for_retirement(s5, 60, 1e9) == []


def test_retire_and_restore_rules() -> None:
    s = TrafficState.initial(["A", "B"]).model_copy(update={"idle_since": {"B": 1.0}})
    retired = policy.retire(s, "B")
    assert retired.retired == ["B"] and retired.idle_since == {}
    assert retired.revision == s.revision + 1
    with pytest.raises(TrafficError, match="still takes traffic"):
        policy.retire(s, "A")
    with pytest.raises(TrafficError, match="retired already"):
        policy.retire(retired, "B")
    with pytest.raises(TrafficError, match=r"is retired .*release restore B"):
        policy.set_weights(
            retired, {"A": 50, "B": 50}, None, {"A": "warm", "B": "retired"}
        )
    with pytest.raises(TrafficError, match="not retired"):
        policy.restore(retired, "A", ["A", "B"], 9.0)
    with pytest.raises(TrafficError, match="not live"):
        policy.restore(retired, "Z", ["A", "B"], 9.0)
    back = policy.restore(retired, "B", ["A", "B"], 9.0)
    assert back.retired == [] and back.weights == retired.weights
    # Its grace period starts over: not due at once, due a grace later.
    assert back.idle_since == {"B": 9.0}
    assert policy.due_for_retirement(back, 60, 10.0) == []
    assert policy.due_for_retirement(back, 60, 69.0) == ["B"]
    # Whatever a replica's warm-up view says, the state's retired list wins.
    with pytest.raises(TrafficError, match="is retired"):
        policy.set_weights(retired, {"A": 50, "B": 50}, None, WARM)


SCALE = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 2}}
FIXED = {
    "num_replicas": "auto",
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1},
}


def test_overrides_park_exactly_the_named_deployments() -> None:
    current = [
        {"name": "ingress", "user_config": {"old": 1}, "max_ongoing_requests": 99},
        {"name": "retriever-1", "max_ongoing_requests": 8, **SCALE},
        {"name": "generator", **FIXED},
    ]
    scales = {"retriever-1": SCALE, "generator": FIXED}
    out = {
        e["name"]: e
        for e in deployment_overrides(current, {"new": 2}, {"retriever-1"}, scales)
    }
    assert out["ingress"] == {
        "name": "ingress",
        "user_config": {"new": 2},
        "max_ongoing_requests": 99,
    }
    assert out["retriever-1"]["autoscaling_config"] == PARKED_SCALE
    assert out["retriever-1"]["max_ongoing_requests"] == 8  # the user's own kept
    assert out["generator"] == {"name": "generator", **FIXED}
    assert current[1]["autoscaling_config"] == SCALE["autoscaling_config"]  # as was
    again = deployment_overrides(list(out.values()), {"new": 3}, set(), scales)
    assert {e["name"]: e for e in again}["retriever-1"] == current[1]


def _app(deployments: list[dict]) -> dict:
    return {
        "name": "ragserve",
        "import_path": "graph.serve.builder:build_app",
        "args": {"releases": {"serve": ["A", "B"]}},
        "deployments": deployments,
    }


def test_parking_never_costs_a_rebuild() -> None:
    scales = {"retriever-1": SCALE, "generator": FIXED}
    listed = _app([{"name": n, **s} for n, s in scales.items()])
    # Listed from the first deploy (ragserve serve): parked in place.
    planned = plan_update(listed, {"w": 1}, {"retriever-1"}, scales)
    by_name = {e["name"]: e for e in planned}
    assert by_name["retriever-1"]["autoscaling_config"] == PARKED_SCALE
    # A hand-written config that never listed them (a serveConfigV2 with only
    # the ingress): parking would change the code version; only the weights go.
    bare = _app([{"name": "ingress", "user_config": {"w": 0}}])
    planned = plan_update(bare, {"w": 1}, {"retriever-1"}, scales)
    assert planned == [{"name": "ingress", "user_config": {"w": 1}}]


def _router(grace_s: float) -> ReleaseRouter:
    live = [
        LiveRelease(
            "A",
            "a" * 64,
            release_ctx("a.md"),
            state="warm",
            deployments=frozenset({"embedder", "generator", "retriever-a"}),
        ),
        LiveRelease(
            "B",
            "b" * 64,
            release_ctx("b.md"),
            state="warm",
            deployments=frozenset({"embedder", "generator", "retriever-b"}),
        ),
    ]
    state = TrafficState.initial(["A", "B"], {"A": 100})
    applied: list[TrafficState] = []
    router: ReleaseRouter

    async def apply(new: TrafficState) -> None:
        applied.append(new)
        router.reconfigure(new.model_dump(mode="json"))  # what Serve then does

    router = ReleaseRouter(live, state, CanaryPolicy(), apply=apply, grace_s=grace_s)
    router.applied = applied  # type: ignore[attr-defined]
    return router


async def test_a_replaced_release_parks_only_its_own_deployments() -> None:
    router = _router(grace_s=0.0)
    await router.change(lambda s: policy.promote(s, "B", router.warm_states()))
    assert router.describe()["releases"][0]["retires_at"] <= time.time()
    await router.retire_due()
    assert router.state.retired == ["A"]
    assert router.releases["A"].state == "retired"
    assert router.parked(router.state) == {"retriever-a"}  # shared ones stay
    with pytest.raises(Exception, match="is retired"):
        await router.change(lambda s: policy.rollback(s, router.warm_states()))
    await router.retire_due()  # nothing more to do: no second change
    assert len(router.applied) == 2  # type: ignore[attr-defined]
    back = router.reconfigure(
        policy.restore(router.state, "A", ["A", "B"], time.time()).model_dump()
    )
    assert [r.name for r in back] == ["A"] and router.releases["A"].state == "warming"
    assert router.parked(router.state) == set()


async def test_grace_period_keeps_it_deployed() -> None:
    router = _router(grace_s=3600.0)
    await router.change(lambda s: policy.promote(s, "B", router.warm_states()))
    await router.retire_due()
    assert router.state.retired == []
    left = router.describe()["releases"][0]["retires_at"] - time.time()
    assert 3500 < left <= 3600.01


def test_a_pin_to_a_retired_release_is_refused() -> None:
    router = _router(grace_s=0.0)
    router.reconfigure(
        TrafficState.initial(["A", "B"], {"B": 100})
        .model_copy(update={"retired": ["A"]})
        .model_dump()
    )
    client = routed_client(router, "B")
    r = client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-ragserve-release": "A"}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "release_retired"
    assert (
        client.post("/v1/chat/completions", json=CHAT).headers["x-ragserve-release"]
        == "B"
    )
    r = client.post("/admin/restore", json={"release": "B"})
    assert r.status_code == 409 and "not retired" in r.json()["error"]["message"]
    r = client.post("/admin/restore", json={"release": "A"})
    assert r.status_code == 200 and router.state.retired == []
