"""`python -m load_tests.release_memory`: what serving two releases in one
graph saves against two graphs, and what retiring one frees.

Makes release A (an index you give, default the bundled docs') and release B
(a small corpus of its own) in a private registry, then starts `ragserve
serve` three times, each alone on the machine with its own Ray: A alone, B
alone, and A with B. For each it records the graph's resident memory (the
serve process and every process under it: Ray's own, every replica, vLLM's
EngineCore) and each deployment's replicas. In the shared graph it then gives
B traffic, takes it away, and measures again once B's grace period is over
and its own retriever has scaled to zero. Writes `results.json` and
`results.md` under `load_tests/results/release-memory-<time>/`.

    python -m load_tests.release_memory --index ~/.cache/ragserve/index/docs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from load_tests.procs import replica_rss_mib, tree_rss_mib

B_DOCS = {
    "lighthouse.md": "# The lighthouse\n\nThe ragserve lighthouse keeper is a "
    "purple axolotl named Quillon, who counts exactly forty-two ships every "
    "night.\n",
    "tides.md": "# Tides\n\nThe tide at Gullrock rises twice a day.\n",
}


def _cli(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "graph.cli.main", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"ragserve {' '.join(argv[:2])} failed: {done.stderr}")
    return done.stdout


def _config(ns: argparse.Namespace, tmp: Path) -> Path:
    nodes = ("embedder", "retriever", "reranker", "generator", "ingress")
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": ns.port},
        # One replica each: the same replica list in every run.
        "deployments": {n: {"num_replicas": 1} for n in nodes},
        "releases": {
            "warmup_queries": ["How does ragserve batch requests?"],
            "grace_period_s": ns.grace_s,
            "canary": {"interval_s": 0.5},
        },
    }
    if ns.model:
        data["models"] = {"generator": {"model": str(ns.model)}}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _wait(url: str, proc: subprocess.Popen, what: str, check: Any) -> None:
    deadline = time.time() + 900
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the graph exited while waiting for {what}")
        try:
            if check(httpx.get(url + "/admin/traffic", timeout=10).json()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def _states(traffic: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["state"] for r in traffic.get("releases", [])}


def _sample(pid: int, settle_s: float) -> dict[str, Any]:
    time.sleep(settle_s)
    totals, replicas = [], {}
    for _ in range(5):
        totals.append(tree_rss_mib(pid))
        replicas = replica_rss_mib(pid)
        time.sleep(1)
    return {
        "graph_rss_mib": round(statistics.median(totals)),
        "replicas_rss_mib": round(sum(replicas.values())),
        "deployments": {k: round(v) for k, v in sorted(replicas.items())},
    }


def _run(
    ns: argparse.Namespace, env: dict[str, str], cfg: Path, releases: list[str]
) -> dict[str, Any]:
    argv = [a for r in releases for a in ("--release", r)]
    log = (ns.tmp / f"serve-{'-'.join(releases)}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "graph.cli.main", "serve", *argv, "--config", str(cfg)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{ns.port}"
    try:
        _wait(
            url, proc, "warm releases", lambda t: set(_states(t).values()) == {"warm"}
        )
        out: dict[str, Any] = {"releases": releases, **_sample(proc.pid, ns.settle_s)}
        if len(releases) == 2:
            a, b = releases
            _cli(env, "traffic", "set", f"{a}=50", f"{b}=50", "--address", url)
            _cli(env, "traffic", "set", f"{a}=100", "--address", url)
            _wait(url, proc, f"{b} retired", lambda t: _states(t).get(b) == "retired")
            out["after_retiring"] = {b: _sample(proc.pid, ns.settle_s)}
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _markdown(res: dict[str, Any]) -> str:
    rows = ["| graph | graph RSS MiB | replicas RSS MiB | deployments (MiB) |"]
    rows.append("| --- | ---: | ---: | --- |")
    for run in res["runs"]:
        for label, s in [(" + ".join(run["releases"]), run)] + [
            (f"{' + '.join(run['releases'])}, {n} retired", v)
            for n, v in run.get("after_retiring", {}).items()
        ]:
            deps = ", ".join(f"{k} {v}" for k, v in s["deployments"].items())
            rows.append(
                f"| {label} | {s['graph_rss_mib']} | {s['replicas_rss_mib']} | {deps} |"
            )
    saved = res["saved"]
    return "\n".join(
        [
            "# Two releases in one graph against two graphs",
            "",
            *rows,
            "",
            f"Two graphs: {saved['two_graphs_mib']} MiB; one graph serving both: "
            f"{saved['one_graph_mib']} MiB; saved {saved['saved_mib']} MiB "
            f"({saved['saved_pct']}%). Replicas only: "
            f"{saved['two_graphs_replicas_mib']} vs "
            f"{saved['one_graph_replicas_mib']} MiB.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.release_memory")
    parser.add_argument("--index", required=True, type=Path, help="release A's index")
    parser.add_argument("--model", type=Path, help="generator folder (default SmolLM2)")
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--grace-s", type=float, default=5.0)
    parser.add_argument("--settle-s", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("load_tests/results"))
    ns = parser.parse_args(argv)
    ns.tmp = Path(tempfile.mkdtemp(prefix="ragserve-release-memory-"))
    env = {
        **os.environ,
        "RAGSERVE_REGISTRY": str(ns.tmp / "registry"),
        "RAGSERVE_AUDIT_LOG": str(ns.tmp / "audit.jsonl"),
        "RAY_TMPDIR": f"/tmp/ray-relmem-{os.getpid()}",
    }
    env.pop("RAY_ADDRESS", None)
    docs_b = ns.tmp / "docs-b"
    docs_b.mkdir()
    for name, text in B_DOCS.items():
        (docs_b / name).write_text(text)
    _cli(
        env,
        "index",
        "build",
        "--docs",
        str(docs_b),
        "--out",
        str(ns.tmp / "index-b"),
        "-q",
    )
    cfg = _config(ns, ns.tmp)
    for name, index in (("A", ns.index), ("B", ns.tmp / "index-b")):
        _cli(
            env, "release", "create", name, "--index", str(index), "--config", str(cfg)
        )
    runs = [_run(ns, env, cfg, r) for r in (["A"], ["B"], ["A", "B"])]
    two = runs[0]["graph_rss_mib"] + runs[1]["graph_rss_mib"]
    one = runs[2]["graph_rss_mib"]
    res = {
        "runs": runs,
        "saved": {
            "two_graphs_mib": two,
            "one_graph_mib": one,
            "saved_mib": two - one,
            "saved_pct": round(100 * (two - one) / two, 1),
            "two_graphs_replicas_mib": runs[0]["replicas_rss_mib"]
            + runs[1]["replicas_rss_mib"],
            "one_graph_replicas_mib": runs[2]["replicas_rss_mib"],
        },
    }
    out = ns.out / time.strftime("release-memory-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(_markdown(res))
    print(_markdown(res))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
