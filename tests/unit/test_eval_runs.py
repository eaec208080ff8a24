"""`ragserve eval` end to end on the bundled docs: the real embedder, FAISS and
fusion reranker in this process or behind a real HTTP server; stored results,
`release show/diff`, and the quality gate of `release promote`."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from graph.cli.main import main
from tests.conftest import DOCS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(app: Any) -> Iterator[str]:
    """`app` on a real loopback port for the duration of the with-block."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        assert time.time() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def partial_index(tmp_path_factory, default_embedder) -> Path:
    """docs/ without a third of its documents (every third, sorted)."""
    from retrieval.index import build_index

    docs = tmp_path_factory.mktemp("partial-docs")
    for i, path in enumerate(sorted(DOCS.glob("*.md"))):
        if i % 3:
            (docs / path.name).write_text(path.read_text())
    out = tmp_path_factory.mktemp("partial") / "index"
    build_index(docs, out, default_embedder, progress=False)
    return out


def _eval(out: Path, *argv: str) -> dict[str, Any]:
    assert main(["eval", *argv, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_eval_is_stable_and_a_partial_index_scores_lower(
    docs_index: Path, partial_index: Path, tmp_path: Path, capsys
) -> None:
    first = _eval(tmp_path / "a.json", "--index", str(docs_index))
    table = capsys.readouterr().out
    assert "reranked / section" in table and "rerank" in table
    again = _eval(tmp_path / "b.json", "--index", str(docs_index))
    assert again["retrieval"] == first["retrieval"]
    assert again["set"]["sha256"] == first["set"]["sha256"]
    dense, reranked = first["retrieval"]["dense"], first["retrieval"]["reranked"]
    assert reranked["doc"]["hit@5"] >= 0.9
    # the default reranker earns its place: it does not lower hit@1
    for level in ("doc", "section"):
        assert reranked[level]["hit@1"] >= dense[level]["hit@1"], level
    partial = _eval(tmp_path / "p.json", "--index", str(partial_index))
    assert partial["headline"]["hit@5"] <= first["headline"]["hit@5"] - 0.2
    assert partial["headline"]["mrr@10"] < first["headline"]["mrr@10"] - 0.2


def test_a_malformed_set_is_one_line_and_exit_2(
    docs_index: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "relevant": ["a.md"]}\n{"question": 1}\n')
    for argv, needle in (
        (["--index", str(docs_index), "--set", str(bad)], "bad.jsonl:2: question"),
        (["--index", str(docs_index), "--set", str(tmp_path)], "queries.jsonl"),
        ([], "--release NAME or --index DIR"),
        (["--index", str(docs_index), "--top-k", "0"], "--top-k"),
    ):
        try:
            code = main(["eval", *argv])
        except SystemExit as exc:  # a flag argparse refuses
            code = exc.code
        assert code == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("ragserve: error: ")
        assert needle in lines[0], lines[0]


def test_eval_over_http_matches_the_process(docs_index: Path, tmp_path: Path) -> None:
    from graph.api.app import ModelNames, ServingContext, create_app
    from graph.config import RagServingArgs
    from graph.local import LocalGraph

    args = RagServingArgs.load(None, [f"retrieval.index_dir={docs_index}"])
    graph = LocalGraph(args)

    async def embed_with_usage(texts: list[str]) -> tuple[Any, int]:
        return await graph.pipeline.steps.embed(texts), len(texts)

    async def readiness() -> dict[str, str]:
        return {"generator": "ready"}

    ctx = ServingContext(
        args=args,
        pipeline=graph.pipeline,
        names=ModelNames("m", "e", "r", 512),
        embed_with_usage=embed_with_usage,
        readiness=readiness,
    )
    local = _eval(tmp_path / "local.json", "--index", str(docs_index))
    for url in serve(create_app(ctx)):
        remote = _eval(tmp_path / "http.json", "--url", url, "--index", str(docs_index))
    assert remote["target"]["mode"] == "http"
    assert remote["retrieval"] == local["retrieval"]


def _router(names: list[str]) -> Any:
    from graph.routing.router import LiveRelease, ReleaseRouter
    from releases.canary import CanaryPolicy
    from releases.traffic import TrafficState
    from tests.unit.test_release_routing import release_ctx

    live = [
        LiveRelease(n, n[0] * 64, release_ctx(f"{n}.md"), state="warm") for n in names
    ]
    state = TrafficState.initial(names, {names[0]: 100})
    return ReleaseRouter(live, state, CanaryPolicy(min_requests=5))


def test_promote_refuses_a_worse_release_unless_forced(
    docs_index: Path,
    partial_index: Path,
    tiny_llama: Path,
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    from tests.unit.test_release_routing import routed_client

    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("RAGSERVE_AUDIT_LOG", str(audit))
    reg = ["--registry", str(tmp_path / "reg")]
    for name, index in (("full", docs_index), ("partial", partial_index)):
        create = ["release", "create", name, "--index", str(index), *reg]
        assert main([*create, "--generator", str(tiny_llama)]) == 0
        assert main(["eval", "--release", name, *reg]) == 0
    capsys.readouterr()
    assert main(["release", "show", "partial", *reg]) == 0
    assert "quality on set docs (74 questions" in capsys.readouterr().out
    assert main(["release", "diff", "full", "partial", *reg]) == 0
    diff = capsys.readouterr().out
    assert "index: - document api.md" in diff and " hit@5: " in diff

    router = _router(["full", "partial"])
    app = routed_client(router, "full").app
    for url in serve(app):
        promote = ["release", "promote", "partial", "--address", url, *reg]
        assert main(promote) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ragserve: error: release partial answers worse than")
        assert "hit@1" in err and "--force" in err and "\n" not in err
        assert router.state.weights["partial"] == 0
        assert main([*promote, "--force"]) == 0
        assert router.state.weights["partial"] == 100
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    forced = [r for r in records if r.get("action") == "release.promote.force"]
    assert len(forced) == 1 and forced[0]["before"]["stable"] == "full"
    assert any("hit@5" in b for b in forced[0]["before"]["breaches"])
