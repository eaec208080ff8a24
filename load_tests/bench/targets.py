"""Issue 28's targets P1-P6 judged on a bench's rows: which row each reads,
the goal, and whether the run met it (plain data in, Markdown lines out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ONE_PROCESS = "one process (FastAPI+uvicorn)"
GRAPH = "graph (Ray Serve)"
Row = dict[str, Any]


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    picks: Callable[[Row], bool]
    met: Callable[[Row], bool]


def _diff(row: Row) -> float | None:
    if row.get("diff_median") is not None:
        return float(row["diff_median"])
    a, b = row.get("a_median"), row.get("b_median")
    return None if a is None or b is None else float(b) - float(a)


def _ratio_at_least(x: float) -> Callable[[Row], bool]:
    return lambda r: r["ratio_median"] is not None and r["ratio_median"] >= x


def _ratio_at_most(x: float) -> Callable[[Row], bool]:
    return lambda r: r["ratio_median"] is not None and r["ratio_median"] <= x


def _diff_at_most(ms: float) -> Callable[[Row], bool]:
    return lambda r: (d := _diff(r)) is not None and d <= ms


def _is(section: str, metric: str, b: str | None = None) -> Callable[[Row], bool]:
    return lambda r: (
        r["section"] == section and r["metric"] == metric and (b is None or r["b"] == b)
    )


def _p3_met(r: Row) -> bool:  # at least 1.0x, with a spread that does not cross it
    return r["ratio_min"] is not None and r["ratio_min"] >= 1.0


TARGETS = [
    Target(
        "P1", "<= +10 ms", _is("overhead", "p50 latency (ms)", GRAPH), _diff_at_most(10)
    ),
    Target(
        "P2", ">= 3x batching off", _is("batching", "requests/s"), _ratio_at_least(3)
    ),
    Target(
        "P2",
        ">= 0.8x the model alone",
        lambda r: (
            r["section"] == "batching" and r["metric"] in ("texts per s", "pairs per s")
        ),
        _ratio_at_least(0.8),
    ),
    Target("P3", ">= 1.0x, spread above 1.0", _is("throughput", "requests/s"), _p3_met),
    Target(
        "P3",
        "<= 1.0x (equal or better)",
        _is("throughput", "p95 latency (ms)"),
        _ratio_at_most(1.0),
    ),
    Target(
        "P4",
        ">= 0.95x vLLM's server",
        _is("generation", "tokens/s"),
        _ratio_at_least(0.95),
    ),
    Target("P4", "<= +20 ms", _is("generation", "TTFT p50 (ms)"), _diff_at_most(20)),
    Target(
        "P4",
        ">= 0.95x vLLM's server",
        _is("vllm_client", "output tokens/s (vLLM client)"),
        _ratio_at_least(0.95),
    ),
    Target(
        "P4",
        "<= +20 ms",
        _is("vllm_client", "TTFT p50 (ms, vLLM client)"),
        _diff_at_most(20),
    ),
    Target(
        "P4",
        "<= 1.1x",
        _is("vllm_client", "ITL p50 (ms, vLLM client)"),
        _ratio_at_most(1.1),
    ),
    Target("P5", ">= 0.97x", _is("tracing", "requests/s"), _ratio_at_least(0.97)),
    Target("P5", "<= 1.03x", _is("tracing", "p50 latency (ms)"), _ratio_at_most(1.03)),
    Target(
        "P6",
        "<= 1.3x one process",
        lambda r: r["metric"] == "CPU-ms per request" and r["a"] == ONE_PROCESS,
        _ratio_at_most(1.3),
    ),
]


def target_lines(rows: list[Row]) -> list[str]:
    """A Markdown section: every row a target reads, its value and verdict."""
    lines = [
        "## Targets (issue 28)",
        "",
        "| target | workload | metric | B vs A | B/A (spread) | B-A | goal | met |",
        "| --- | --- | --- | --- | --- | ---: | --- | --- |",
    ]
    for t in TARGETS:
        for r in (r for r in rows if t.picks(r)):
            ratio = "-" if r["ratio_median"] is None else f"{r['ratio_median']:.2f}"
            if r.get("ratio_min") is not None:
                ratio += f" ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
            diff = _diff(r)
            lines.append(
                f"| {t.name} | {r['workload']} | {r['metric']} | {r['b']} vs {r['a']} "
                f"| {ratio} | {'' if diff is None else f'{diff:+.1f}'} | {t.goal} "
                f"| {'yes' if t.met(r) else '**no**'} |"
            )
    return lines if len(lines) > 4 else []
