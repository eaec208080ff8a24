"""One bench per graph layout, side by side: the cost of distribution as numbers.

Knows which layouts (`layout.preset` of the graph's config) a run compares
and how their rows and targets read in one report; each layout's own bench
(servers started afresh, its idle CPU measured alone) is `cli.run_bench`'s.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load_tests.bench.servers import RESULTS, log
from load_tests.bench.targets import target_lines

#: The single-box default, then every step its own deployment (multi-GPU).
LAYOUTS = ("single", "split")
PRESETS = ("retrieval-in-ingress", "split", "single")
#: P6's idle goal, CPU-seconds per second of the graph's whole Ray.
IDLE_GOAL = 0.05


def run_layouts(
    ns: argparse.Namespace, run_one: Callable[[argparse.Namespace], int]
) -> int:
    """Run `run_one` once per layout in `ns.layouts` (into `OUT/<layout>/`),
    then write `OUT/results.md` with the layouts side by side."""
    out = Path(ns.out) if ns.out else RESULTS / time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, dict[str, Any]] = {}
    for layout in ns.layouts:
        one = copy.copy(ns)
        one.layout, one.out = layout, str(out / layout)
        log(f"layout {layout}")
        rc = run_one(one)
        path = out / layout / "results.json"
        if rc != 0 or not path.exists():
            return rc or 1
        results[layout] = json.loads(path.read_text())
    if len(results) > 1:
        (out / "results.md").write_text(render(results))
        log(f"layouts side by side: {out / 'results.md'}")
    return 0


def _key(row: dict[str, Any]) -> tuple[str, ...]:
    return (row["section"], row["workload"], row["metric"], row["a"], row["b"])


def render(results: dict[str, dict[str, Any]]) -> str:
    """The layouts' rows (B/A against the same baseline) in one table, then
    each layout's targets and its idle CPU."""
    layouts = list(results)
    by_layout = {
        lay: {_key(r): r for r in res.get("rows", []) if "graph" in r["b"]}
        for lay, res in results.items()
    }
    keys = [k for k in by_layout[layouts[0]] if all(k in by_layout[x] for x in layouts)]
    lines = [
        "# ragserve bench: layouts side by side",
        "",
        "Each layout's bench ran on its own (its graph started afresh) against the "
        "same baselines; a cell is the graph's median and B/A against the "
        "baseline named in the row, from the layout's own interleaved rounds "
        "(`<layout>/results.md`).",
        "",
        "| section | workload | metric | baseline (A) | graph variant (B) | "
        + " | ".join(layouts)
        + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---:" for _ in layouts) + " |",
    ]
    for key in keys:
        cells = []
        for lay in layouts:
            r = by_layout[lay][key]
            ratio = r.get("ratio_median")
            value = r.get("b_median")
            shown = "-" if value is None else f"{value:.{r.get('digits', 1)}f}"
            cells.append(shown + (f" ({ratio:.2f}x)" if ratio is not None else ""))
        lines.append(f"| {' | '.join(key)} | " + " | ".join(cells) + " |")
    for lay, res in results.items():
        idle = res.get("idle_cpu_s_per_s", {})
        graph_idle = idle.get("graph")
        verdict = (
            "-"
            if graph_idle is None
            else ("yes" if graph_idle <= IDLE_GOAL else "**no**")
        )
        lines += [
            "",
            f"## {lay}",
            "",
            "Idle CPU-s per s: "
            + ", ".join(f"{n} {v:.3f}" for n, v in idle.items())
            + f" (P6 idle <= {IDLE_GOAL}: {verdict})",
            "",
            *target_lines(res.get("rows", [])),
        ]
    return "\n".join(lines) + "\n"
