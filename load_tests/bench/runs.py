"""Load runs and their comparison rows: the load generator as a subprocess.

Knows how to run one workload against one target (over HTTP, through
`python -m load_tests run`), how to read the server's CPU around it, and how
to turn interleaved rounds into a B/A row with its spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load_tests.bench.cpu import CpuSampler, cpu_between
from load_tests.bench.servers import OFFLINE_ENV, REPO, BenchError, Servers, log


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    url: str
    model: str | None = None  # vLLM's server wants the model field
    #: The `Servers` name whose processes serve it, for its CPU-seconds.
    server: str | None = None
    #: Serve apps in the same Ray that are not this target (CPU left out).
    other_apps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Workload:
    name: str
    flags: tuple[str, ...]


@dataclass
class Runner:
    """Runs the load generator as a subprocess and keeps every report."""

    out: Path
    run_s: float
    servers: Servers | None = None
    drain_s: float = 20.0
    runs: list[dict[str, Any]] = field(default_factory=list)

    def _cpu_s(self, target: Target) -> float | None:
        if self.servers is None or target.server not in self.servers.running:
            return None
        return self.servers.cpu_s(target.server, target.other_apps)

    def _sampler(self, target: Target) -> CpuSampler | None:
        if self.servers is None or target.server not in self.servers.running:
            return None
        servers, name, others = self.servers, target.server, target.other_apps
        return CpuSampler(lambda: servers.cpu_s(name, others)).begin()

    def run(
        self, section: str, target: Target, workload: Workload, tag: str, seconds: float
    ) -> dict[str, Any]:
        folder = self.out / "runs" / section / f"{workload.name}-{target.key}-{tag}"
        cmd = [
            sys.executable,
            "-m",
            "load_tests",
            "run",
            "--url",
            target.url,
            "--duration",
            f"{seconds:g}",
            "--max-requests",
            "20000",
            "--drain-s",
            f"{self.drain_s:g}",
            "--timeout",
            "60",
            "--no-plot",
            "-q",
            "--out",
            str(folder),
            *workload.flags,
        ]
        if target.model:
            cmd += ["--model", target.model]
        load_before = os.getloadavg()[0]
        sampler = self._sampler(target)
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=seconds + self.drain_s + 90,
        )
        if proc.returncode != 0:
            raise BenchError(
                f"load run {folder.name} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-500:]}"
            )
        samples = sampler.end() if sampler is not None else []
        report: dict[str, Any] = json.loads((folder / "report.json").read_text())
        report["cpu"] = _cpu_block(samples, report)
        report["_meta"] = {
            "section": section,
            "target": target.key,
            "workload": workload.name,
            "tag": tag,
            "loadavg_1m": [load_before, os.getloadavg()[0]],
        }
        self.runs.append(report["_meta"] | {"summary": _brief(report)})
        errors = report["requests"]["failed"]
        log(
            f"  {section}/{workload.name} {target.label} [{tag}]: "
            f"{report['throughput']['requests_per_s']:.2f} req/s, "
            f"p50 {_fmt(report['latency']['e2e']['p50_ms'])} ms, "
            f"{_fmt(report['cpu']['per_request_ms'])} CPU-ms/req"
            + (f", {errors} errors {report['errors']['by_kind']}" if errors else "")
        )
        return report

    def interleave(
        self,
        section: str,
        targets: Sequence[Target],
        workload: Workload,
        rounds: int,
        warmup_s: float,
    ) -> dict[str, list[dict[str, Any]]]:
        """Warm each target up, then rounds of A, B, (C...) back to back."""
        for target in targets:
            self.run(section, target, workload, "warmup", warmup_s)
        out: dict[str, list[dict[str, Any]]] = {t.key: [] for t in targets}
        for i in range(rounds):
            for target in targets:
                out[target.key].append(
                    self.run(section, target, workload, f"r{i + 1}", self.run_s)
                )
        return out


def _cpu_block(samples: list[tuple[float, float]], report: dict[str, Any]) -> dict:
    """P6: the server's CPU-seconds within the run's own window (not the load
    generator's start-up around it), per succeeded request."""
    start = report["started_at"]
    used = cpu_between(samples, start, start + report["elapsed_s"])
    done = report["requests"]["succeeded"]
    if used is None or not done:
        return {"cpu_s": used, "per_request_ms": None}
    return {"cpu_s": used, "per_request_ms": 1000.0 * used / done}


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    lat = report["latency"]
    return {
        "requests": report["requests"],
        "rps": report["throughput"]["requests_per_s"],
        "tokens_per_s": report["throughput"]["tokens_per_s"],
        "e2e_p50_ms": lat["e2e"]["p50_ms"],
        "e2e_p95_ms": lat["e2e"]["p95_ms"],
        "ttft_p50_ms": lat["ttft"]["p50_ms"],
        "itl_p50_ms": lat["itl"]["p50_ms"],
        "cpu_ms_per_request": report["cpu"]["per_request_ms"],
        "errors": report["errors"]["by_kind"],
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


Metric = Callable[[dict[str, Any]], float | None]

METRICS: dict[str, tuple[str, Metric, int]] = {
    "e2e_p50": ("p50 latency (ms)", lambda r: r["latency"]["e2e"]["p50_ms"], 1),
    "e2e_p95": ("p95 latency (ms)", lambda r: r["latency"]["e2e"]["p95_ms"], 1),
    "rps": ("requests/s", lambda r: r["throughput"]["requests_per_s"], 2),
    "tps": ("tokens/s", lambda r: r["throughput"]["tokens_per_s"], 1),
    "ttft_p50": ("TTFT p50 (ms)", lambda r: r["latency"]["ttft"]["p50_ms"], 1),
    "itl_p50": ("ITL p50 (ms)", lambda r: r["latency"]["itl"]["p50_ms"], 1),
    "itl_p95": ("ITL p95 (ms)", lambda r: r["latency"]["itl"]["p95_ms"], 1),
    # P6: summed over every process of the server, from /proc.
    "cpu": ("CPU-ms per request", lambda r: r["cpu"]["per_request_ms"], 1),
}


def compare(
    section: str,
    workload: str,
    runs: dict[str, list[dict[str, Any]]],
    a: Target,
    b: Target,
    metric: str,
    with_difference: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """One table row: B/A per round, its median and spread."""
    label, get, digits = METRICS[metric]
    pairs = [
        (get(ra), get(rb))
        for ra, rb in zip(runs[a.key], runs[b.key], strict=True)
        if ra["requests"]["failed"] == 0 and rb["requests"]["failed"] == 0
    ]
    values = [(x, y) for x, y in pairs if x and y is not None]
    ratios = [y / x for x, y in values]
    diffs = [y - x for x, y in values]
    row: dict[str, Any] = {
        "section": section,
        "workload": workload,
        "metric": label,
        "a": a.label,
        "b": b.label,
        "a_median": statistics.median([x for x, _ in values]) if values else None,
        "b_median": statistics.median([y for _, y in values]) if values else None,
        "digits": digits,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios) if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "rounds": len(ratios),
        "note": note,
    }
    if with_difference and diffs:
        row["diff_median"] = statistics.median(diffs)
        row["diff_min"], row["diff_max"] = min(diffs), max(diffs)
    failed = len(pairs) < len(runs[a.key])
    if failed or len(values) < len(pairs):
        skipped = len(runs[a.key]) - len(values)
        row["note"] = (
            note + "; " if note else ""
        ) + f"{skipped} round(s) left out (errors or nothing measured)"
    return row


@dataclass
class Bench:
    ns: argparse.Namespace
    out: Path
    servers: Servers
    runner: Runner
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def budget_left(self) -> float:
        return self.ns.budget_s - (time.monotonic() - self.started)

    def section(self, name: str, estimate_s: float, fn: Callable[[], None]) -> None:
        if name not in self.ns.sections:
            return
        if self.budget_left() < estimate_s:
            self.notes[name] = (
                f"skipped: {self.budget_left():.0f} s of the time budget left, "
                f"needs ~{estimate_s:.0f} s (raise --budget-s or shorten --run-s)"
            )
            log(f"{name}: {self.notes[name]}")
            return
        log(f"== {name}")
        began = time.monotonic()
        try:
            fn()
        except BenchError as exc:
            self.notes[name] = f"failed: {exc}"
            log(f"{name} failed: {exc}")
        self.extra.setdefault("section_s", {})[name] = time.monotonic() - began
