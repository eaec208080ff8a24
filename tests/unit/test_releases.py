"""Release manifests, the registry, traffic policy and the canary judge:
pure logic over real files (a real FAISS index of docs/, the tiny Llama)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from releases import traffic as t
from releases.canary import CanaryPolicy, OutcomeWindow, WindowStats, judge
from releases.create import build_release
from releases.errors import (
    ArtifactMismatchError,
    ReleaseError,
    ReleaseExistsError,
    ReleaseNotFoundError,
    TrafficError,
)
from releases.manifest import ReleaseManifest, diff
from releases.registry import Registry


def _models(generator: Path) -> dict:
    return {
        "embedder": {"model": "default"},
        "reranker": {"kind": "fusion", "dense_weight": 0.6},
        "generator": {"model": str(generator)},
    }


@pytest.fixture
def index_copy(docs_index: Path, tmp_path: Path) -> Path:
    out = tmp_path / "idx"
    shutil.copytree(docs_index, out)
    return out


def _release(name: str, index: Path, gen: Path, **kw) -> ReleaseManifest:
    return build_release(
        name,
        str(index),
        _models(gen),
        kw.pop("settings", {"retrieval": {"top_k": 8}}),
        kw.pop("prompt_template", "rag-v1"),
        **kw,
    )


def test_release_pins_every_artifact_and_is_content_addressed(
    index_copy: Path, tiny_llama: Path
) -> None:
    a = _release("A", index_copy, tiny_llama)
    kinds = set(a.artifacts)
    assert kinds == {
        "embedder",
        "index",
        "reranker",
        "generator",
        "prompt_template",
        "config",
        "runtime",
    }
    assert a.artifacts["generator"].checksum.startswith("sha256:")
    assert a.artifacts["index"].details["documents"]  # lineage: source documents
    assert a.artifacts["prompt_template"].identity == "rag-v1@1"
    assert set(a.artifacts["runtime"].details) >= {"ragserve", "vllm", "ray", "torch"}
    # Same artifacts, another name: same id; another template: another id.
    assert _release("B", index_copy, tiny_llama).id == a.id
    c = _release("C", index_copy, tiny_llama, prompt_template="rag-concise-v1")
    assert c.id != a.id
    assert a.fingerprint == f"A@{a.id[:12]}"
    # An edited manifest no longer matches its id.
    data = json.loads(a.model_dump_json())
    data["artifacts"]["config"]["details"]["retrieval"]["top_k"] = 99
    with pytest.raises(ValueError, match="edited"):
        ReleaseManifest.model_validate(data)


def test_create_validates_before_writing(
    index_copy: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    with pytest.raises(ReleaseError, match="unknown prompt template 'nope'"):
        _release("A", index_copy, tiny_llama, prompt_template="nope")
    with pytest.raises(ReleaseError, match="does not exist"):
        _release("A", index_copy, tmp_path / "no-model")
    with pytest.raises(ReleaseError, match="index"):
        _release("A", tmp_path / "no-index", tiny_llama)
    with pytest.raises(ReleaseError, match="release name"):
        _release("bad name", index_copy, tiny_llama)
    models = _models(tiny_llama)
    models["embedder"] = {"model": str(tiny_llama)}
    with pytest.raises(ReleaseError, match="built with embedder"):
        build_release("A", str(index_copy), models, {}, "rag-v1")


def test_registry_refuses_overwrite_and_lists(
    index_copy: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    reg = Registry(tmp_path / "reg")
    a = _release("A", index_copy, tiny_llama)
    reg.add(a)
    before = (tmp_path / "reg" / "A.json").read_bytes()
    with pytest.raises(ReleaseExistsError, match="already exists"):
        reg.add(_release("A", index_copy, tiny_llama, settings={"other": 1}))
    assert (tmp_path / "reg" / "A.json").read_bytes() == before
    reg.add(_release("B", index_copy, tiny_llama, parent="A"))
    assert [m.name for m in reg.list()] == ["A", "B"]
    assert reg.get("B").parent == "A"
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == ["A.json", "B.json"]
    with pytest.raises(ReleaseNotFoundError, match="known: A, B"):
        reg.get("C")


def test_registry_default_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAGSERVE_REGISTRY", str(tmp_path / "r"))
    assert Registry().root == tmp_path / "r"
    monkeypatch.delenv("RAGSERVE_REGISTRY")
    monkeypatch.setenv("RAGSERVE_CACHE_DIR", str(tmp_path / "c"))
    assert Registry().root == tmp_path / "c" / "releases"


def test_verify_names_the_missing_or_changed_artifact(
    index_copy: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    a = _release("A", index_copy, model)
    a.verify()
    chunks = index_copy / "chunks.jsonl"
    original = chunks.read_bytes()
    chunks.write_bytes(original + b"\n")
    with pytest.raises(ArtifactMismatchError, match=r"index file .*chunks.jsonl"):
        a.verify()
    chunks.write_bytes(original)
    a.verify()
    b = _release("B", index_copy, model)
    (model / "config.json").write_text("{}")
    with pytest.raises(ArtifactMismatchError, match=r"generator .* changed"):
        b.verify()
    shutil.rmtree(model)
    with pytest.raises(ArtifactMismatchError, match=r"generator .* is missing"):
        b.verify()


def test_diff_names_what_changed(index_copy: Path, tiny_llama: Path) -> None:
    a = _release("A", index_copy, tiny_llama)
    b = _release(
        "B",
        index_copy,
        tiny_llama,
        prompt_template="rag-concise-v1",
        settings={"retrieval": {"top_k": 4}},
    )
    lines = diff(a, b)
    assert "prompt_template: rag-v1@1 -> rag-concise-v1@1" in lines
    assert "config.retrieval.top_k: 8 -> 4" in lines
    assert not any(line.startswith("generator") for line in lines)
    assert diff(a, a) == []


LIVE_WARM = {"A": "warm", "B": "warm", "C": "warming"}


def test_weights_rules() -> None:
    assert t.parse_assignments(["A=90", "B=10"]) == {"A": 90, "B": 10}
    for bad, needle in (
        (["A"], "NAME=PERCENT"),
        (["A=x"], "whole percent"),
        (["A=-5"], "between 0 and 100"),
        (["A=50", "A=50"], "twice"),
    ):
        with pytest.raises(TrafficError, match=needle):
            t.parse_assignments(bad)
    state = t.TrafficState.initial(["A", "B", "C"])
    assert state.weights == {"A": 100, "B": 0, "C": 0} and state.stable == "A"
    with pytest.raises(TrafficError, match="sum to 100"):
        t.set_weights(state, {"A": 90, "B": 5}, None, LIVE_WARM)
    with pytest.raises(TrafficError, match="not live"):
        t.set_weights(state, {"A": 90, "Z": 10}, None, LIVE_WARM)
    with pytest.raises(TrafficError, match="negative"):
        t.set_weights(state, {"A": 110, "B": -10}, None, LIVE_WARM)
    with pytest.raises(TrafficError, match=r"'C' is not warm yet \(warming\)"):
        t.set_weights(state, {"A": 90, "C": 10}, None, LIVE_WARM)
    with pytest.raises(TrafficError, match="already takes all traffic"):
        t.set_weights(state, {"A": 100}, {"A": 10}, LIVE_WARM)
    new = t.set_weights(state, {"A": 100}, {"B": 10}, LIVE_WARM)
    assert new.shadow == {"B": 10} and new.revision == state.revision + 1


def test_promote_and_rollback() -> None:
    s0 = t.TrafficState.initial(["A", "B"], {"A": 90, "B": 10})
    assert s0.stable == "A"
    # A canary in flight: rollback returns to the stable release.
    back = t.rollback(s0, {"A": "warm", "B": "warm"})
    assert back.weights == {"A": 100, "B": 0} and back.stable == "A"
    warm = {"A": "warm", "B": "warm"}
    with pytest.raises(TrafficError, match="nothing to roll back to"):
        t.rollback(back, warm)
    s1 = t.promote(back, "B", warm)
    assert s1.weights == {"A": 0, "B": 100}
    assert (s1.stable, s1.history) == ("B", ["A"])
    with pytest.raises(TrafficError, match="nothing to promote"):
        t.promote(s1, "B", warm)
    with pytest.raises(TrafficError, match="not live"):
        t.promote(s1, "Z", warm)
    s2 = t.rollback(s1, warm)
    assert s2.weights == {"A": 100, "B": 0}
    assert (s2.stable, s2.history) == ("A", [])
    # traffic set to 100% makes a new stable too.
    s3 = t.set_weights(s2, {"B": 100}, None, warm)
    assert (s3.stable, s3.history) == ("B", ["A"])


def test_sticky_assignment_and_split() -> None:
    weights = {"A": 90, "B": 10}
    assert {t.choose(weights, t.sticky_bucket("session-1")) for _ in range(20)} == {
        t.choose(weights, t.sticky_bucket("session-1"))
    }
    picks = [t.choose(weights, t.sticky_bucket(f"s{i}")) for i in range(4000)]
    share_b = picks.count("B") / len(picks)
    assert 0.08 < share_b < 0.12
    assert t.choose({"A": 0, "B": 100}, 0) == "B"
    assert t.effective_weights({"A": 50, "B": 50}, {"A": "warm"}) == {"A": 50}


def test_canary_breach_takes_weight_to_the_stable() -> None:
    s = t.TrafficState.initial(["A", "B"], {"A": 90, "B": 10})
    s2 = t.take_weight_away(s, "B", "too slow")
    assert s2.weights == {"A": 100, "B": 0} and s2.reasons == {"B": "too slow"}
    assert t.take_weight_away(s2, "B", "again") is s2


def test_judge() -> None:
    policy = CanaryPolicy(min_requests=10, max_latency_p95_ratio=2.0)
    stable = WindowStats(100, 0.0, 100.0, 50.0)
    assert judge(policy, stable, WindowStats(5, 1.0, 900.0, 900.0)) is None
    assert judge(policy, stable, WindowStats(20, 0.0, 150.0, 60.0)) is None
    reason = judge(policy, stable, WindowStats(20, 0.0, 900.0, 60.0))
    assert reason and "p95 latency" in reason
    reason = judge(policy, stable, WindowStats(20, 0.3, 100.0, 50.0))
    assert reason and "error rate" in reason
    window = OutcomeWindow(window_s=10)
    window.add(True, 100, 10, at=0.0)
    window.add(False, 200, None, at=5.0)
    window.add(True, 300, 30, at=12.0)
    stats = window.stats(now=12.0)
    assert stats.requests == 2 and stats.error_rate == 0.5
    assert stats.p95_latency_ms == 300
