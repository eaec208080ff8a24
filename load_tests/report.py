"""From request records to the report: percentiles, throughput, errors, SLOs.

Knows the report's JSON shape and how an SLO is judged against it; knows
nothing of how the records were collected.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from load_tests.runner import RequestRecord, RunResult
from load_tests.stats import summarize

REPORT_VERSION = 1

_LATENCY_SLO = re.compile(r"^(ttft|itl|e2e)_(p50|p95|p99|mean|max)_ms$")
_OTHER_SLOS = {"error_rate": "max", "min_rps": "min", "min_tokens_per_s": "min"}


def summarize_records(
    records: Sequence[RequestRecord], elapsed_s: float
) -> dict[str, Any]:
    """Latency percentiles, throughput and errors of a set of requests.

    Args:
        records: the requests (all of a run, one scenario, or one stage).
        elapsed_s: the wall time they are spread over, for rates.

    Returns:
        `requests` (sent / responses / succeeded / failed), `error_rate`,
        `errors` (by kind and by HTTP status; 429 and 503 counted on their
        own, with the Retry-After values seen), `latency` (`e2e`, `ttft`,
        `itl`: count, mean, min, p50, p95, p99, max in ms; successful
        requests only) and `throughput` (`requests_per_s` of successful
        requests, `tokens_per_s` of completion tokens).
    """
    ok = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    by_kind = Counter(_kind(r.error) for r in failed)
    by_status = Counter(str(r.status) for r in failed if r.status)
    retry_after = sorted({r.retry_after for r in failed if r.retry_after})
    tokens = sum(r.tokens for r in ok)
    elapsed = max(elapsed_s, 1e-9)
    return {
        "requests": {
            "sent": len(records),
            "responses": sum(1 for r in records if r.status),
            "succeeded": len(ok),
            "failed": len(failed),
        },
        "error_rate": len(failed) / len(records) if records else 0.0,
        "errors": {
            "by_kind": dict(sorted(by_kind.items())),
            "by_status": dict(sorted(by_status.items())),
            "status_429": by_status.get("429", 0),
            "status_503": by_status.get("503", 0),
            "retry_after_seen": sum(1 for r in failed if r.retry_after),
            "retry_after_values": retry_after,
            "examples": _examples(failed),
        },
        "latency": {
            "e2e": summarize([r.e2e_s for r in ok if r.e2e_s is not None]),
            "ttft": summarize([r.ttft_s for r in ok if r.ttft_s is not None]),
            "itl": summarize([gap for r in ok for gap in r.itl_s]),
        },
        "throughput": {
            "requests_per_s": len(ok) / elapsed,
            "tokens_per_s": tokens / elapsed,
            "completion_tokens": tokens,
        },
    }


def _examples(failed: Sequence[RequestRecord]) -> dict[str, str]:
    """The first detail seen per error, so a report says what went wrong."""
    out: dict[str, str] = {}
    for r in failed:
        if r.error and r.error not in out:
            out[r.error] = r.detail or ""
    return out


def _kind(error: str | None) -> str:
    return (error or "").split(":", 1)[0]


def build_report(
    result: RunResult, timeline: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The whole report of a run: overall, per scenario, per load step.

    Args:
        result: what the runner returned.
        timeline: replica samples (`load_tests.timeline`) within the run's
            window, stored as they are for the plot.
    """
    cfg = result.config
    records = result.records
    unit = "req/s" if cfg.mode == "open" else "clients"
    stages = []
    for index, start in enumerate(result.stage_starts_s):
        stage = cfg.stages[index]
        if index + 1 < len(result.stage_starts_s):
            length = result.stage_starts_s[index + 1] - start
        else:
            length = stage.duration_s
        mine = [r for r in records if r.stage == index]
        stages.append(
            {
                "index": index,
                "offered": stage.load,
                "unit": unit,
                "started_s": start,
                "duration_s": length,
                **summarize_records(mine, max(length, 1e-9)),
            }
        )
    scenarios = {
        name: summarize_records(
            [r for r in records if r.scenario == name], result.elapsed_s
        )
        for name in sorted({r.scenario for r in records})
    }
    return {
        "version": REPORT_VERSION,
        "config": cfg.describe(),
        "per_second": per_second(records),
        "started_at": result.started_at,
        "elapsed_s": result.elapsed_s,
        "dropped": result.dropped,
        **summarize_records(records, result.elapsed_s),
        "scenarios": scenarios,
        "stages": stages,
        "timeline": timeline or [],
    }


def per_second(records: Sequence[RequestRecord]) -> list[dict[str, int]]:
    """Requests sent, completed and failed in each second of the run.

    Completions are counted when they happened (send time plus latency), so a
    backlog draining after the load stops shows as completions without sends.
    """
    if not records:
        return []
    ends = [r.sent_s + r.e2e_s for r in records if r.e2e_s is not None]
    last = int(max([r.sent_s for r in records] + ends)) + 1
    bins = [{"t_s": t, "sent": 0, "completed": 0, "failed": 0} for t in range(last)]
    for r in records:
        bins[int(r.sent_s)]["sent"] += 1
        if r.e2e_s is not None:
            done = bins[int(r.sent_s + r.e2e_s)]
            done["completed" if r.error is None else "failed"] += 1
    return bins


def parse_slo(text: str) -> dict[str, float]:
    """`ttft_p95_ms=500,error_rate=0.01` -> thresholds.

    Latency keys are `{ttft,itl,e2e}_{p50,p95,p99,mean,max}_ms` (upper
    bounds); `error_rate` is an upper bound; `min_rps` and
    `min_tokens_per_s` are lower bounds.

    Raises:
        ValueError: an unknown key or a value that is not a number.
    """
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not (_LATENCY_SLO.match(key) or key in _OTHER_SLOS):
            raise ValueError(
                f"unknown SLO {item!r}; use e.g. ttft_p95_ms=500, e2e_p99_ms=2000, "
                "itl_p95_ms=100, error_rate=0.01, min_rps=5, min_tokens_per_s=50"
            )
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"SLO {key} needs a number, got {value!r}") from None
    return out


def check_slo(report: dict[str, Any], slo: dict[str, float]) -> list[str]:
    """Every SLO the report breaks, one line each; empty when all hold.

    A latency SLO with nothing measured (e.g. TTFT without streaming
    requests) is broken: an SLO that was asked for must be checked.
    """
    broken: list[str] = []
    for key, limit in slo.items():
        match = _LATENCY_SLO.match(key)
        if match:
            metric, stat = match.groups()
            value = report["latency"][metric][f"{stat}_ms"]
            if value is None:
                broken.append(f"{key}: nothing measured (limit {limit:g})")
            elif value > limit:
                broken.append(f"{key} {value:.1f} > {limit:g}")
        elif key == "error_rate":
            if report["error_rate"] > limit:
                broken.append(f"error_rate {report['error_rate']:.4f} > {limit:g}")
        elif key == "min_rps":
            rps = report["throughput"]["requests_per_s"]
            if rps < limit:
                broken.append(f"requests_per_s {rps:.2f} < {limit:g}")
        elif key == "min_tokens_per_s":
            tps = report["throughput"]["tokens_per_s"]
            if tps < limit:
                broken.append(f"tokens_per_s {tps:.1f} < {limit:g}")
    return broken


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def one_line(report: dict[str, Any]) -> str:
    """A terse human summary for the terminal."""
    req = report["requests"]
    lat = report["latency"]
    thr = report["throughput"]

    def ms(block: dict[str, Any], key: str) -> str:
        value = block[key]
        return "-" if value is None else f"{value:.0f}"

    parts = [
        f"{req['succeeded']}/{req['sent']} ok",
        f"{thr['requests_per_s']:.2f} req/s",
        f"{thr['tokens_per_s']:.1f} tok/s",
        f"e2e p50/p95/p99 {ms(lat['e2e'], 'p50_ms')}/{ms(lat['e2e'], 'p95_ms')}/"
        f"{ms(lat['e2e'], 'p99_ms')} ms",
    ]
    if lat["ttft"]["count"]:
        parts.append(
            f"ttft p50/p95 {ms(lat['ttft'], 'p50_ms')}/{ms(lat['ttft'], 'p95_ms')} ms"
        )
    if lat["itl"]["count"]:
        parts.append(f"itl p50 {ms(lat['itl'], 'p50_ms')} ms")
    errors = report["errors"]["by_kind"]
    if errors:
        parts.append("errors " + ",".join(f"{k}={v}" for k, v in errors.items()))
    return " | ".join(parts)
