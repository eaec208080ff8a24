"""A bench's output: results.json, results.md and the ratio plot.

Knows how rows, notes and extras become a Markdown table and a PNG.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from load_tests.bench.autoscale import check_fixed_replicas
from load_tests.bench.runs import Bench, _fmt
from load_tests.bench.targets import target_lines


def write_results(bench: Bench) -> None:
    out = bench.out
    check_fixed_replicas(bench)
    data = {
        "args": vars(bench.ns),
        "rows": bench.rows,
        "notes": bench.notes,
        **bench.extra,
        "runs": bench.runner.runs,
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "results.md").write_text(render_markdown(bench))
    if bench.rows:
        plot_ratios(bench.rows, out / "summary.png")


def render_markdown(bench: Bench) -> str:
    ns = bench.ns
    gen = bench.extra.get("generator", {})
    loads = [load for r in bench.runner.runs for load in r["loadavg_1m"]]
    lines = [
        f"# ragserve bench {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Generator: `{gen.get('served_name', '?')}` ({gen.get('path', '?')}); "
        f"{ns.rounds} interleaved rounds of {ns.run_s:g} s per side, after a "
        f"{ns.warmup_s:g} s warm-up each; wall time "
        f"{bench.extra.get('wall_s', 0) / 60:.1f} min.",
        f"Machine: {os.cpu_count()} CPUs; 1-min load average during runs "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f}.",
        "",
        "B/A is the median over rounds of B's value divided by A's in the same "
        "round; the spread is the min-max of those per-round ratios.",
        "",
        "| section | workload | metric | A | B | A (median) | B (median) "
        "| B/A | spread | B-A | rounds | note |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: "
        "| --- |",
    ]
    for row in bench.rows:
        d = row["digits"]
        diff = (
            f"{row['diff_median']:+.1f} "
            f"({row['diff_min']:+.1f}..{row['diff_max']:+.1f})"
            if "diff_median" in row
            else ""
        )
        spread = (
            f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
            if row["ratio_min"] is not None
            else "-"
        )
        lines.append(
            f"| {row['section']} | {row['workload']} | {row['metric']} | {row['a']} "
            f"| {row['b']} | {_fmt(row['a_median'], d)} | {_fmt(row['b_median'], d)} "
            f"| {_fmt(row['ratio_median'], 2)} | {spread} | {diff} | {row['rounds']} "
            f"| {row['note']} |"
        )
    targets = target_lines(bench.rows)
    if targets:
        lines += ["", *targets]
    scaling = bench.extra.get("autoscale")
    if scaling:
        lines += _autoscale_lines(scaling)
    if bench.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {name}: {text}" for name, text in bench.notes.items()]
    idle = bench.extra.get("idle_cpu_s_per_s")
    if idle:
        lines += [
            "",
            "Idle CPU (CPU-s per s over 10 s without load, whole process tree; "
            "the graph's includes the other variants' share of Ray's shared "
            "processes): " + ", ".join(f"{n} {v:.3f}" for n, v in idle.items()),
        ]
    ready = bench.extra.get("ready_s")
    if ready:
        lines += [
            "",
            "Server start-up (to ready): "
            + ", ".join(f"{n} {_fmt(s)} s" for n, s in ready.items()),
        ]
    return "\n".join(lines) + "\n"


def _autoscale_lines(scaling: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Autoscaling under a ramp (embedder: min 1, max 3, target 2 ongoing, "
        "upscale delay 2 s, downscale delay 5 s)",
        "",
        f"Peak running replicas {scaling['peak_running_replicas']} (target "
        f"{scaling['peak_target_replicas']}), reached at "
        f"{_fmt(scaling['peak_reached_s'], 1)} s; load ended at "
        f"{scaling['load_ended_s']:.1f} s; back to 1 replica at "
        f"{_fmt(scaling['back_to_one_s'], 1)} s. Plot: `{scaling['plot']}`.",
        "",
        "| offered req/s | achieved req/s | p50 ms | p95 ms |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for s in scaling["stages"]:
        lines.append(
            f"| {s['offered_rps']:g} | {s['achieved_rps']:.2f} "
            f"| {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} |"
        )
    lines += ["", "Scaling decisions (Serve controller log):", ""]
    for e in scaling["decisions"] or []:
        lines.append(
            f"- t={e['t_s']:.1f} s: {e['from']} -> {e['to']} replicas at "
            f"{e['ongoing_requests']:g} ongoing requests"
        )
    if not scaling["decisions"]:
        lines.append("- none recorded")
    return lines


def plot_ratios(rows: list[dict[str, Any]], path: Path) -> None:
    from load_tests.plot import plt

    usable = [r for r in rows if r["ratio_median"] is not None]
    if not usable:
        return
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(usable) + 1.5))
    ys = list(range(len(usable)))
    for y, row in zip(ys, usable, strict=True):
        med = row["ratio_median"]
        ax.errorbar(
            [med],
            [y],
            xerr=[[med - row["ratio_min"]], [row["ratio_max"] - med]],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
    ax.axvline(1.0, color="grey", linestyle="--")
    # Log scale: half as fast and twice as fast sit equally far from 1.
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(
        [
            f"{r['section']}: {r['workload']} {r['metric']}\n{r['b']} / {r['a']}"
            for r in usable
        ],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("B / A (median, min-max over rounds)")
    ax.set_title("ragserve bench: ratios from interleaved runs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
