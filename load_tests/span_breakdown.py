"""Where one tenant's requests spent the time before their first token, read
from the graph's traces.

Knows the span names and attributes the graph documents (`rag.request` with
`tenant`, the steps, `queue.fair_share`, `rag.generate` with `llm.ttft_ms`,
`queue.handle`, `queue.engine`) as plain dicts from `OTLPSink(keep=True)`;
knows nothing of the graph's code or of how the load was sent.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

#: Milestones of a request, in the order it passes them: ms after its
#: `rag.request` started.
MILESTONES = (
    "at_embedder",  # the embedder replica picked the call up
    "embed_batch",  # the batch holding it started to run
    "embedded",  # rag.embed ended
    "retrieved",  # rag.retrieve ended
    "reranked",  # rag.rerank ended
    "slot",  # queue.fair_share ended: the generator slot granted
    "at_generator",  # the generator replica picked the call up
    "scheduled",  # vLLM's scheduler took it (queue.engine ended)
    "first_token",  # the generator replica had its first token
)
_ENDS = {
    "rag.embed": "embedded",
    "rag.retrieve": "retrieved",
    "rag.rerank": "reranked",
    "queue.fair_share": "slot",
}


def request_milestones(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per traced request: its tenant, its start (ns) and each
    milestone it reached, in ms after `rag.request` started."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    rows = []
    for trace in by_trace.values():
        roots = [s for s in trace if s["name"] == "rag.request"]
        if len(roots) != 1:
            continue
        t0 = roots[0]["start_ns"]
        row: dict[str, Any] = {
            "tenant": roots[0]["attributes"].get("tenant"),
            "start_ns": t0,
        }
        for span in trace:
            mark = _ENDS.get(span["name"])
            if mark:
                row[mark] = (span["end_ns"] - t0) / 1e6
        row.update(_embed_marks(trace, t0))
        row.update(_generation_marks(trace, t0))
        rows.append(row)
    return sorted(rows, key=lambda r: r["start_ns"])


def _embed_marks(trace: list[dict[str, Any]], t0: int) -> dict[str, float]:
    embed = [s for s in trace if s["name"] == "rag.embed"]
    if len(embed) != 1:
        return {}
    inner = {s["name"]: s for s in trace if s["parent_id"] == embed[0]["span_id"]}
    marks = {}
    if "queue.handle" in inner:
        marks["at_embedder"] = (inner["queue.handle"]["end_ns"] - t0) / 1e6
    if "embedder.run" in inner:
        marks["embed_batch"] = (inner["embedder.run"]["start_ns"] - t0) / 1e6
    return marks


def _generation_marks(trace: list[dict[str, Any]], t0: int) -> dict[str, float]:
    gen = [s for s in trace if s["name"] == "rag.generate"]
    if len(gen) != 1:
        return {}
    span = gen[0]
    children = {s["name"]: s for s in trace if s["parent_id"] == span["span_id"]}
    handle = children.get("queue.handle")
    picked = handle["end_ns"] if handle else span["start_ns"]
    marks = {"at_generator": (picked - t0) / 1e6}
    engine = children.get("queue.engine")
    if engine:
        marks["scheduled"] = (engine["end_ns"] - t0) / 1e6
    ttft = span["attributes"].get("llm.ttft_ms")
    if ttft is not None:
        marks["first_token"] = (picked - t0) / 1e6 + float(ttft)
    return marks


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 and p95 of each milestone over `rows` (those that reached it)."""
    out: dict[str, dict[str, float]] = {}
    for mark in MILESTONES:
        values = sorted(r[mark] for r in rows if mark in r)
        if not values:
            continue
        p95 = (
            statistics.quantiles(values, n=100, method="inclusive")[94]
            if len(values) > 1
            else values[0]
        )
        out[mark] = {
            "p50_ms": statistics.median(values),
            "p95_ms": p95,
            "n": len(values),
        }
    return out


def markdown(phases: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """A table of milestones (rows) by phase (columns): p50 / p95 ms."""
    names = list(phases)
    lines = [
        "| ms after rag.request started (p50 / p95) | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for mark in MILESTONES:
        cells = []
        for name in names:
            m = phases[name].get(mark)
            cells.append(f"{m['p50_ms']:.0f} / {m['p95_ms']:.0f}" if m else "-")
        lines.append(f"| {mark} | " + " | ".join(cells) + " |")
    return lines


def by_phase(
    spans: list[dict[str, Any]], windows: dict[str, list[int]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Milestones of tenant B's requests alone and next to A, and of A's next
    to B; `windows` holds each phase's [start, end) in ns (`B_alone`, `both`)."""
    rows = request_milestones(spans)

    def pick(tenant: str, phase: str) -> list[dict[str, Any]]:
        lo, hi = windows[phase]
        return [r for r in rows if r["tenant"] == tenant and lo <= r["start_ns"] < hi]

    return {
        "B alone": summarize(pick("B", "B_alone")),
        "B next to A": summarize(pick("B", "both")),
        "A next to B": summarize(pick("A", "both")),
    }


def section(phases: dict[str, dict[str, dict[str, float]]] | None) -> list[str]:
    """The report's section for `by_phase`'s answer (nothing without one)."""
    if not phases:
        return []
    return ["## Where the time to first token went (traces)", "", *markdown(phases), ""]
