"""schemathesis over `/admin/*` of a two-release graph of its own (the shared
session graph's traffic stays untouched): what the admin schema calls valid
is taken (200) or a documented conflict (409), what it refuses is a 400, and
OPTIONS names every method, for more than one seed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph.cli.main import main
from tests.factories_retrieval import write_tree
from tests.integration import releases_graph as rg
from tests.integration.conftest import free_port
from tests.integration.test_schemathesis import SEEDS, run_schemathesis

pytestmark = [pytest.mark.own_cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def admin_graph(
    tmp_path_factory: pytest.TempPathFactory,
    docs_index: Path,
    tiny_llama: Path,
    default_embedder: Any,
) -> Iterator[str]:
    from retrieval.index import build_index

    tmp = tmp_path_factory.mktemp("admin")
    registry = tmp / "registry"
    index_b = tmp / "index-b"
    build_index(
        write_tree(tmp / "docs-b", rg.B_DOCS), index_b, default_embedder, progress=False
    )
    port = free_port()
    base = rg.release_config(tmp, tiny_llama, port, None)
    for name, index in (("A", docs_index), ("B", index_b)):
        argv = ["release", "create", name, "--index", str(index)]
        assert main([*argv, "--config", str(base), "--registry", str(registry)]) == 0
    env = rg.graph_env(tmp, registry)
    log = tmp / "serve.log"
    argv = [
        "--release",
        "A",
        "--release",
        "B",
        "--config",
        str(rg.serve_config(base, tmp)),
    ]
    proc = rg.start_graph(argv, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        rg.wait_ready(url, proc, log, timeout=600)
        rg.wait_warm(url, timeout=300)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except ProcessLookupError:
            pass
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("seed", SEEDS)
def test_schemathesis_finds_nothing_in_the_admin_api(
    admin_graph: str, tmp_path: Path, seed: int
) -> None:
    doc = httpx.get(admin_graph + "/openapi.json", timeout=30).json()
    weights = doc["components"]["schemas"]["TrafficChange"]["properties"]["weights"]
    assert weights["propertyNames"] == {"enum": ["A", "B"]}  # the live releases
    run_schemathesis(admin_graph, tmp_path, seed, "--include-path-regex", "^/admin/")
