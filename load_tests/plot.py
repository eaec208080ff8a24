"""PNG plots of a report: latency against offered load, and load and replicas
over time. Matplotlib runs headless (Agg); nothing here opens a window."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
# The backend is chosen before pyplot is imported, so no display is needed.
import matplotlib.pyplot as plt


def plot_report(report: dict[str, Any], path: Path, title: str | None = None) -> Path:
    """Write a two-panel PNG for one run.

    Top: end-to-end and TTFT p50/p95/p99 at each offered load step. Bottom:
    offered and achieved load over time, and, when the report has a replica
    timeline, running replicas per deployment on a second axis.

    Args:
        report: a report from `load_tests.report.build_report`.
        path: the PNG to write.
        title: figure title; defaults to the scenario and mode.

    Returns:
        `path`.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    cfg = report["config"]
    fig.suptitle(
        title or f"{cfg['scenario']} ({cfg['mode']} loop) against {cfg['url']}"
    )
    _latency_vs_load(top, report)
    _over_time(bottom, report)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _latency_vs_load(ax: Any, report: dict[str, Any]) -> None:
    stages = [s for s in report["stages"] if s["requests"]["succeeded"]]
    unit = report["stages"][0]["unit"] if report["stages"] else "req/s"
    styles = {"p50": "-o", "p95": "--s", "p99": ":^"}
    for metric, colour in (("e2e", "tab:blue"), ("ttft", "tab:orange")):
        for stat, style in styles.items():
            xs, ys = [], []
            for stage in stages:
                value = stage["latency"][metric][f"{stat}_ms"]
                if value is not None:
                    xs.append(stage["offered"])
                    ys.append(value)
            if xs:
                ax.plot(xs, ys, style, color=colour, label=f"{metric} {stat}")
    ax.set_xlabel(f"offered load ({unit})")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency percentiles against offered load")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)


def _over_time(ax: Any, report: dict[str, Any]) -> None:
    started = report["started_at"]
    unit = report["stages"][0]["unit"] if report["stages"] else "req/s"
    # Offered load as a step line over the run.
    xs, ys = [], []
    for stage in report["stages"]:
        xs += [stage["started_s"], stage["started_s"] + stage["duration_s"]]
        ys += [stage["offered"], stage["offered"]]
    if xs:
        ax.plot(xs, ys, color="grey", label=f"offered ({unit})")
    per_second = report.get("per_second") or []
    if per_second:
        ax.plot(
            [b["t_s"] + 0.5 for b in per_second],
            [b["completed"] for b in per_second],
            color="tab:green",
            alpha=0.8,
            label="completed req/s",
        )
        if any(b["failed"] for b in per_second):
            ax.plot(
                [b["t_s"] + 0.5 for b in per_second],
                [b["failed"] for b in per_second],
                color="tab:red",
                alpha=0.8,
                label="failed req/s",
            )
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel(f"load ({unit})")
    ax.grid(True, alpha=0.3)
    timeline = report.get("timeline") or []
    samples = [e for e in timeline if "running" in e and "event" not in e]
    events = [e for e in timeline if e.get("event") == "scale"]
    lines, labels = ax.get_legend_handles_labels()
    if samples:
        right = ax.twinx()
        series: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for sample in samples:
            series[f"{sample.get('app', '')}/{sample['deployment']}"].append(sample)
        # Deployments that never change just draw flat lines at 1: show the
        # ones that scaled, or all when none did.
        moving = {
            k: v
            for k, v in series.items()
            if len({(s["running"], s.get("target")) for s in v}) > 1
        }
        for key, points in sorted((moving or series).items()):
            xs = [p["t"] - started for p in points]
            (line,) = right.step(
                xs, [p["running"] for p in points], where="post", label=f"{key} running"
            )
            targets = [p.get("target") for p in points]
            if any(t is not None for t in targets):
                right.step(
                    xs,
                    [t if t is not None else float("nan") for t in targets],
                    where="post",
                    linestyle="--",
                    color=line.get_color(),
                    alpha=0.6,
                    label=f"{key} target",
                )
        for event in events:
            x = event["t"] - started
            right.annotate(
                f"{'up' if event['to'] > event['from'] else 'down'} "
                f"{event['from']}->{event['to']}\n"
                f"ongoing {event['ongoing_requests']:g}",
                (x, event["to"]),
                fontsize=7,
                xytext=(4, -22),
                textcoords="offset points",
            )
            right.plot(
                [x], [event["to"]], "k^" if event["to"] > event["from"] else "kv"
            )
        right.set_ylabel("replicas")
        right.set_ylim(bottom=0)
        more_lines, more_labels = right.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
        ax.set_title("load and replicas over time")
    else:
        ax.set_title("load over time (no replica timeline given)")
    ax.legend(lines, labels, fontsize=8, loc="upper left")
