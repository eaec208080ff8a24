"""The bench's comparisons, one function per section, over running servers.

Each section runs interleaved rounds (A, B, A, B, ...) of one or two
workloads and appends B/A rows, CPU-seconds per request (P6) included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from load_tests.bench.runs import Bench, Target, Workload, compare
from load_tests.bench.servers import log
from load_tests.otlp_sink import OTLPSink


@dataclass(frozen=True)
class Targets:
    graph: Target
    nobatch: Target
    traced: Target
    local: Target
    vllm: Target


def closed(name: str, scenario: str, concurrency: int, *extra: str) -> Workload:
    flags = (f"--scenario={scenario}", "--mode=closed", f"--concurrency={concurrency}")
    return Workload(name, (*flags, *extra))


def overhead(bench: Bench, t: Targets) -> None:
    """P1: one client, graph (batching on and off) vs one process."""
    for wl in (
        closed("retrieve-c1", "retrieve", 1),
        closed("rag-chat-c1", "chat", 1, "--max-tokens=4"),
    ):
        runs = bench.runner.interleave(
            "overhead",
            [t.local, t.graph, t.nobatch],
            wl,
            bench.ns.rounds,
            bench.ns.warmup_s,
        )
        for b in (t.graph, t.nobatch):
            bench.rows.append(
                compare("overhead", wl.name, runs, t.local, b, "e2e_p50", True)
            )
            bench.rows.append(compare("overhead", wl.name, runs, t.local, b, "cpu"))


def batching(bench: Bench, t: Targets) -> None:
    """P2: 32 clients, every batched node on vs off; one and four inputs."""
    limit = bench.extra.get("model_limit", {})
    for wl, per_request, own in (
        (closed("embeddings-c32", "embeddings", 32), 1, "embedder_texts_per_s"),
        (
            closed("embeddings-c32-x4", "embeddings", 32, "--embed-inputs=4"),
            4,
            "embedder_texts_per_s",
        ),
        (closed("rerank-c32", "rerank", 32), 8, "reranker_pairs_per_s"),
    ):
        runs = bench.runner.interleave(
            "batching", [t.nobatch, t.graph], wl, bench.ns.rounds, bench.ns.warmup_s
        )
        for metric in ("rps", "e2e_p95", "cpu"):
            bench.rows.append(
                compare("batching", wl.name, runs, t.nobatch, t.graph, metric)
            )
        if limit.get(own):
            bench.rows.append(
                model_limit_row(wl.name, runs["graph"], per_request, limit[own], own)
            )


def model_limit_row(
    workload: str,
    runs: list[dict[str, Any]],
    per_request: int,
    limit: float,
    what: str,
) -> dict[str, Any]:
    """The graph's items/s against the model's own batch-32 rate (P2)."""
    rates = [
        r["throughput"]["requests_per_s"] * per_request
        for r in runs
        if r["requests"]["failed"] == 0
    ]
    ratios = [x / limit for x in rates]
    label = what.split("_", 1)[1].replace("_", " ")
    return {
        "section": "batching",
        "workload": workload,
        "metric": label,
        "a": "the model alone, batch 32, one process",
        "b": "graph (Ray Serve)",
        "a_median": limit,
        "b_median": sorted(rates)[len(rates) // 2] if rates else None,
        "digits": 1,
        "ratios": ratios,
        "ratio_median": sorted(ratios)[len(ratios) // 2] if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "rounds": len(ratios),
        "note": "A measured once, before the servers started",
    }


def throughput(bench: Bench, t: Targets) -> None:
    """P3: RAG chat at 8 clients, graph vs one process."""
    wl = closed("rag-chat-c8", "chat", 8, "--max-tokens=16")
    runs = bench.runner.interleave(
        "throughput", [t.local, t.graph], wl, bench.ns.rounds, bench.ns.warmup_s
    )
    for metric in ("rps", "e2e_p95", "cpu"):
        bench.rows.append(
            compare("throughput", wl.name, runs, t.local, t.graph, metric)
        )


def generation(bench: Bench, t: Targets) -> None:
    """P4: streaming, graph vs vLLM's own OpenAI server, RAG off."""
    ns = bench.ns
    wl = closed(
        f"stream-c4-{ns.gen_max_tokens}tok",
        "chat_stream",
        4,
        f"--max-tokens={ns.gen_max_tokens}",
        "--rag=off",
    )
    # vLLM's server rejects ragserve's `rag` extension: its runs send none.
    vllm_wl = Workload(wl.name, tuple(f for f in wl.flags if f != "--rag=off"))
    for target in (t.vllm, t.graph):
        bench.runner.run(
            "generation",
            target,
            vllm_wl if target is t.vllm else wl,
            "warmup",
            ns.warmup_s,
        )
    runs: dict[str, list[dict[str, Any]]] = {"vllm": [], "graph": []}
    for i in range(ns.rounds):
        runs["vllm"].append(
            bench.runner.run("generation", t.vllm, vllm_wl, f"r{i + 1}", ns.run_s)
        )
        runs["graph"].append(
            bench.runner.run("generation", t.graph, wl, f"r{i + 1}", ns.run_s)
        )
    for metric in ("tps", "ttft_p50", "itl_p50", "itl_p95", "cpu"):
        bench.rows.append(compare("generation", wl.name, runs, t.vllm, t.graph, metric))


def tracing(bench: Bench, t: Targets, sink: OTLPSink) -> None:
    """P5: 100% sampling vs tracing off."""
    ns = bench.ns
    wl = closed("rag-chat-c4", "chat", 4, "--max-tokens=4")
    for target in (t.graph, t.traced):
        bench.runner.run("tracing", target, wl, "warmup", ns.warmup_s)
    runs: dict[str, list[dict[str, Any]]] = {"graph": [], "traced": []}
    for i in range(ns.rounds):
        for target in (t.graph, t.traced):
            runs[target.key].append(
                bench.runner.run("tracing", target, wl, f"r{i + 1}", ns.run_s)
            )
    time.sleep(6)  # batch span processors export every ~5 s
    snap = sink.snapshot()
    bench.extra["otlp_sink"] = snap
    note = tracing_note(snap)
    bench.notes["tracing"] = note
    for metric in ("e2e_p50", "e2e_p95", "rps", "cpu"):
        bench.rows.append(
            compare("tracing", wl.name, runs, t.graph, t.traced, metric, note=note)
        )


def prime(bench: Bench, targets: list[Target], autoscale: str | None) -> None:
    """A few seconds of every request kind on every server before any run.

    A fresh replica pays one-off costs on its first real batches (kernel
    choices for new shapes, connection pools, an exporter's first flush);
    without this, whichever variant a section uses first is charged them.
    """
    log("== priming every server")
    mix = ("--scenario=mix", "--mix=chat=1,embeddings=1,rerank=1,retrieve=1")
    for target in targets:
        if target.key == "vllm":
            flags: tuple[str, ...] = ("--scenario=chat_stream",)
        else:
            flags = mix
        wl = Workload("prime", (*flags, "--mode=closed", "--concurrency=2"))
        bench.runner.run("prime", target, wl, "prime", 3)
    if autoscale:
        # One client: enough to warm it, too little to make it scale.
        scaled = Target("autoscale", "graph, autoscaling embedder", autoscale)
        wl = Workload("prime", (*mix, "--mode=closed", "--concurrency=1"))
        bench.runner.run("prime", scaled, wl, "prime", 3)


def tracing_note(snap: dict[str, Any]) -> str:
    """What the OTLP sink's counts say about the graph's tracing."""
    names: dict[str, int] = snap["names"]
    ours = {n: c for n, c in names.items() if n.startswith("rag.")}
    # Apps without an endpoint must send nothing; their service is "ragserve".
    strays = snap.get("services", {}).get("ragserve", 0)
    stray = f"; {strays} spans came from the tracing-off apps" if strays else ""
    if ours:
        listed = ", ".join(f"{n} x{c}" for n, c in sorted(ours.items()))
        return f"tracing on: the sink received {snap['spans']} spans ({listed}){stray}"
    if snap["spans"]:
        listed = ", ".join(sorted(names))
        return (
            "tracing not yet implemented in the graph: the sink received only "
            f"{snap['spans']} spans from vLLM's own tracer ({listed}), no rag.* spans"
        )
    if snap["requests"]:
        return (
            f"tracing not yet implemented: {snap['requests']} exports reached the "
            "sink but none decoded as OTLP/protobuf"
        )
    return "tracing not yet implemented: no spans reached the sink"
