"""The autoscale section: a rate ramp on the autoscaling embedder, and replicas.

Knows the ramp run and how to read the replica timeline around it into peak
replicas, scaling decisions and per-stage latency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from load_tests.bench.runs import Bench
from load_tests.bench.servers import OFFLINE_ENV, REPO, BenchError, log
from load_tests.timeline import read_timeline


def autoscale_section(bench: Bench, timeline: Path, url: str) -> None:
    ns = bench.ns
    from load_tests.plot import plot_report

    folder = bench.out / "runs" / "autoscale" / "ramp"
    steps = ns.ramp.split(",")
    duration = ns.ramp_step_s * len(steps)
    cmd = [
        sys.executable,
        "-m",
        "load_tests",
        "run",
        "--url",
        url,
        "--scenario=embeddings",
        f"--embed-inputs={ns.ramp_embed_inputs}",
        f"--rate={ns.ramp}",
        "--arrival=poisson",
        f"--step-s={ns.ramp_step_s:g}",
        f"--duration={duration:g}",
        "--max-requests=20000",
        "--timeout=30",
        "--drain-s=15",
        "--no-plot",
        "-q",
        "--out",
        str(folder),
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if proc.returncode != 0:
        raise BenchError(f"ramp run failed: {proc.stderr.strip()[-500:]}")
    report = json.loads((folder / "report.json").read_text())
    # Wait for the scale-down to show (or give up), then plot with it.
    deadline = time.monotonic() + ns.scale_down_wait_s
    end = report["started_at"] + report["elapsed_s"]
    while time.monotonic() < deadline:
        samples = _embedder_samples(read_timeline(timeline, end))
        if (
            samples
            and samples[-1]["running"] <= 1
            and samples[-1].get("target") in (1, None)
        ):
            break
        time.sleep(2)
    entries = [
        e
        for e in read_timeline(timeline, report["started_at"] - 2, time.time())
        if e.get("app") == "autoscale" and e.get("deployment") == "embedder"
    ]
    report["timeline"] = entries
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    png = plot_report(
        report,
        bench.out / "autoscale.png",
        title="embedder autoscaling under a rate ramp (min 1, max 3, target 2)",
    )
    bench.extra["autoscale"] = summarize_scaling(report, entries) | {"plot": png.name}
    log(f"  autoscale: {bench.extra['autoscale']}")


def _embedder_samples(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("app") == "autoscale"
        and e.get("deployment") == "embedder"
        and "event" not in e
    ]


def summarize_scaling(
    report: dict[str, Any], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Peak replicas and when scaling happened, relative to the run's start."""
    t0 = report["started_at"]
    samples = [e for e in entries if "event" not in e]
    events = [e for e in entries if e.get("event") == "scale"]
    load_end = t0 + sum(s["duration_s"] for s in report["stages"] if s["offered"] > 0)
    peak = max((s["running"] for s in samples), default=0)
    first_peak = next((s["t"] - t0 for s in samples if s["running"] == peak), None)
    # Back down: the first sample after the load ended and after the peak
    # showed up with one replica running again.
    after = max(load_end, t0 + (first_peak or 0.0))
    back = next(
        (s["t"] - t0 for s in samples if s["t"] > after and s["running"] <= 1),
        None,
    )
    return {
        "peak_running_replicas": peak,
        "peak_target_replicas": max((s.get("target") or 0 for s in samples), default=0),
        "peak_reached_s": first_peak,
        "load_ended_s": load_end - t0,
        "back_to_one_s": back,
        "decisions": [
            {
                "t_s": round(e["t"] - t0, 1),
                "from": e["from"],
                "to": e["to"],
                "ongoing_requests": e["ongoing_requests"],
            }
            for e in events
        ],
        "stages": [
            {
                "offered_rps": s["offered"],
                "achieved_rps": round(s["throughput"]["requests_per_s"], 2),
                "p50_ms": s["latency"]["e2e"]["p50_ms"],
                "p95_ms": s["latency"]["e2e"]["p95_ms"],
            }
            for s in report["stages"]
        ],
        "errors": report["errors"]["by_kind"],
    }


# --- output ---------------------------------------------------------------------


def check_fixed_replicas(bench: Bench) -> None:
    """Note any compared deployment whose replica count moved during the run."""
    moved: dict[str, int] = {}
    for entry in read_timeline(bench.out / "timeline.jsonl"):
        if "event" in entry or entry.get("app") == "autoscale":
            continue
        key = f"{entry.get('app')}/{entry.get('deployment')}"
        moved[key] = max(moved.get(key, 0), entry["running"], entry.get("target") or 0)
    scaled = {k: v for k, v in moved.items() if v > 1}
    if scaled:
        bench.notes["replicas"] = (
            "compared deployments did not stay at one replica: "
            + ", ".join(f"{k} up to {v}" for k, v in sorted(scaled.items()))
        )
