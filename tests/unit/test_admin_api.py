"""The admin API's document is true (no Ray): what its schema calls valid the
server takes (200) or finds the live state cannot take now (409), what it
refuses (400) the schema calls invalid, and OPTIONS names every method."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from graph.routing.router import LiveRelease, ReleaseRouter
from releases.canary import CanaryPolicy
from releases.traffic import TrafficState
from tests.unit.test_release_routing import release_ctx, routed_client


def two_releases(warm_b: str = "warm") -> ReleaseRouter:
    live = [
        LiveRelease("A", "a" * 64, release_ctx("a.md"), state="warm"),
        LiveRelease("B", "b" * 64, release_ctx("b.md"), state=warm_b),
    ]
    state = TrafficState.initial(["A", "B"], {"A": 100})
    return ReleaseRouter(live, state, CanaryPolicy(min_requests=5))


def body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """The request schema of POST `path`, with the document's components."""
    content = doc["paths"][path]["post"]["requestBody"]["content"]
    schema = dict(content["application/json"]["schema"])
    schema["components"] = doc["components"]
    return schema


def valid(doc: dict[str, Any], path: str, body: Any) -> bool:
    try:
        jsonschema.validate(body, body_schema(doc, path))
    except jsonschema.ValidationError:
        return False
    return True


@pytest.fixture
def client() -> TestClient:
    return routed_client(two_releases(warm_b="warming"))


def test_every_split_the_schema_allows_is_taken_or_a_conflict() -> None:
    client = routed_client(two_releases())
    doc = client.get("/openapi.json").json()
    weights = doc["components"]["schemas"]["TrafficChange"]["properties"]["weights"]
    assert len(weights["anyOf"]) == 2 + 101 and weights["propertyNames"]["enum"]
    for a in range(0, 101, 7):
        body = {"weights": {"A": a, "B": 100 - a}}
        assert valid(doc, "/admin/traffic", body)
        r = client.post("/admin/traffic", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["releases"][0]["weight"] == a
    for refused in (
        {"weights": {"A": 50, "B": 10}},
        {"weights": {}},
        {"weights": {"A": 90, "Z": 10}},
        {"weights": {"": 100}},
        {"weights": {"A": 100}, "shadow": {"B": 0}},
    ):
        assert not valid(doc, "/admin/traffic", refused), refused
        r = client.post("/admin/traffic", json=refused)
        assert r.status_code == 400, (refused, r.text)


def test_names_must_be_live_and_conflicts_are_409(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/admin/promote", "/admin/restore"):
        for name in ("", "Z"):
            assert not valid(doc, path, {"release": name})
            assert client.post(path, json={"release": name}).status_code == 400
        assert valid(doc, path, {"release": "A"})
    # Valid bodies the live state cannot take: B is warming, A holds all,
    # nothing was retired, nothing to roll back to.
    for path, body in (
        ("/admin/promote", {"release": "B"}),
        ("/admin/promote", {"release": "A"}),
        ("/admin/restore", {"release": "A"}),
        ("/admin/rollback", None),
        ("/admin/traffic", {"weights": {"A": 50, "B": 50}}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["error"]["code"] == "traffic_conflict"


def test_every_admin_change_documents_its_statuses(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/admin/traffic", "/admin/promote", "/admin/restore"):
        statuses = set(doc["paths"][path]["post"]["responses"])
        assert {"200", "400", "404", "409", "500", "503"} <= statuses, path
    # No body: nothing to refuse as 400.
    rollback = set(doc["paths"]["/admin/rollback"]["post"]["responses"])
    assert rollback == {"200", "404", "409", "500", "503"}
    assert "409" not in doc["paths"]["/admin/traffic"]["get"]["responses"]


def test_options_and_405_name_every_method_of_a_path(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        r = client.options(path)
        assert r.status_code == 204, path
        allowed = {m.strip().lower() for m in r.headers["allow"].split(",")}
        assert set(ops) <= allowed, (path, allowed)
    r = client.delete("/admin/traffic")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, OPTIONS, POST"
    assert client.options("/no/such/path").status_code == 404
