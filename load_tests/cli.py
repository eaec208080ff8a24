"""`python -m load_tests`: run a load test or re-plot a report.

    python -m load_tests run --url http://127.0.0.1:8000 --scenario mix \\
        --rate 2,4,8 --step-s 10 --max-requests 500 --slo ttft_p95_ms=800
    python -m load_tests plot load_tests/results/run-.../report.json

Exit status: 0 done, 2 the run could not start (bad flags, a non-loopback
target), 3 an SLO given with --slo was broken (the reason on stderr, one line).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from load_tests.report import (
    build_report,
    check_slo,
    one_line,
    parse_slo,
    write_report,
)
from load_tests.runner import LoadTestError, RunConfig, Stage, check_loopback, run
from load_tests.scenarios import SCENARIOS, PayloadOptions, ScenarioPicker, parse_mix

EXIT_USAGE = 2
EXIT_SLO = 3
RESULTS = Path(__file__).resolve().parent / "results"


def _loads(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LoadTestError(
            f"{flag} expects numbers like 4 or 2,4,8; got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise LoadTestError(f"{flag} needs one or more numbers >= 0; got {text!r}")
    return values


def build_stages(
    loads: list[float], duration_s: float, step_s: float | None
) -> list[Stage]:
    """Load steps of `step_s` each (default: the duration split evenly), cut
    at `duration_s` so the run never outlasts it."""
    if duration_s <= 0:
        raise LoadTestError("--duration must be > 0")
    step = step_s if step_s is not None else duration_s / len(loads)
    if step <= 0:
        raise LoadTestError("--step-s must be > 0")
    stages, used = [], 0.0
    for load in loads:
        if used >= duration_s - 1e-9:
            break
        length = min(step, duration_s - used)
        stages.append(Stage(load, length))
        used += length
    return stages


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Validate flags into a `RunConfig`.

    Raises:
        LoadTestError: a flag is out of range, the scenario or mix is
            unknown, or the target is not loopback.
    """
    url = check_loopback(ns.url)
    if ns.max_requests < 1:
        raise LoadTestError("--max-requests must be >= 1")
    mix = parse_mix(ns.mix) if ns.mix else None
    ScenarioPicker(ns.scenario, mix)  # fail before any request on a bad name
    if ns.mode == "open":
        loads = _loads(ns.rate, "--rate")
    else:
        loads = _loads(ns.concurrency, "--concurrency")
    headers = {}
    api_key = ns.api_key or os.environ.get("RAGSERVE_API_KEY")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return RunConfig(
        url=url,
        scenario=ns.scenario,
        mix=mix,
        mode=ns.mode,
        arrival=ns.arrival,
        stages=build_stages(loads, ns.duration, ns.step_s),
        max_requests=ns.max_requests,
        request_timeout_s=ns.timeout,
        drain_s=ns.drain_s,
        max_in_flight=ns.max_in_flight,
        payload=PayloadOptions(
            model=ns.model,
            max_tokens=ns.max_tokens,
            temperature=ns.temperature,
            rag=ns.rag,
            embed_inputs=ns.embed_inputs,
            rerank_documents=ns.rerank_documents,
        ),
        seed=ns.seed,
        headers=headers,
    )


def cmd_run(ns: argparse.Namespace) -> int:
    config = config_from_args(ns)
    slo = parse_slo(ns.slo) if ns.slo else {}
    out = Path(ns.out) if ns.out else RESULTS / time.strftime("run-%Y%m%d-%H%M%S")
    result = run(config)
    timeline = None
    if ns.timeline:
        from load_tests.timeline import read_timeline

        timeline = read_timeline(
            Path(ns.timeline),
            result.started_at - 2.0,
            result.started_at + result.elapsed_s + ns.timeline_tail_s,
        )
    report = build_report(result, timeline)
    broken = check_slo(report, slo)
    report["slo"] = {"thresholds": slo, "broken": broken}
    write_report(report, out / "report.json")
    if not ns.no_plot:
        from load_tests.plot import plot_report

        plot_report(report, out / "report.png")
    if not ns.quiet:
        print(one_line(report))
        print(f"report: {out / 'report.json'}", file=sys.stderr)
    if broken:
        print("SLO failed: " + "; ".join(broken), file=sys.stderr)
        return EXIT_SLO
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    import json

    from load_tests.plot import plot_report

    report_path = Path(ns.report)
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoadTestError(f"cannot read report {report_path}: {exc}") from None
    if ns.timeline:
        from load_tests.timeline import read_timeline

        report["timeline"] = read_timeline(
            Path(ns.timeline),
            report["started_at"] - 2.0,
            report["started_at"] + report["elapsed_s"] + ns.timeline_tail_s,
        )
    out = Path(ns.out) if ns.out else report_path.with_suffix(".png")
    print(plot_report(report, out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests",
        description="Load tests against an OpenAI-style server on loopback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run one load test and write its report")
    r.add_argument("--url", default="http://127.0.0.1:8000", help="loopback base URL")
    r.add_argument(
        "--scenario", default="mix", choices=[*SCENARIOS, "mix"], help="what to send"
    )
    r.add_argument(
        "--mix", help="weights for --scenario mix, e.g. chat_stream=3,rerank=1"
    )
    r.add_argument(
        "--mode",
        default="open",
        choices=["open", "closed"],
        help="open: arrivals on a schedule; closed: N clients back to back",
    )
    r.add_argument(
        "--rate", default="2", help="open loop req/s; a list (2,4,8) is a ramp"
    )
    r.add_argument("--arrival", default="poisson", choices=["poisson", "fixed"])
    r.add_argument(
        "--concurrency", default="4", help="closed loop clients; a list is a ramp"
    )
    r.add_argument("--step-s", type=float, help="seconds per ramp step")
    r.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load at most"
    )
    r.add_argument("--max-requests", type=int, default=1000, help="requests at most")
    r.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    r.add_argument(
        "--drain-s",
        type=float,
        default=30.0,
        help="wait this long for in-flight requests after the load ends",
    )
    r.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="open loop: arrivals beyond this many in flight are dropped (counted)",
    )
    r.add_argument("--model", help="model field of chat requests")
    r.add_argument("--max-tokens", type=int, default=16)
    r.add_argument("--temperature", type=float, default=0.0)
    r.add_argument(
        "--rag",
        default="default",
        choices=["default", "off"],
        help="off sends rag.enabled=false (ragserve only)",
    )
    r.add_argument("--embed-inputs", type=int, default=1, help="texts per embedding")
    r.add_argument("--rerank-documents", type=int, default=8)
    r.add_argument("--api-key", help="bearer token (default: $RAGSERVE_API_KEY)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="report folder (default load_tests/results/run-*)")
    r.add_argument("--no-plot", action="store_true", help="skip the PNG")
    r.add_argument("--timeline", help="replica timeline JSONL to merge into the report")
    r.add_argument(
        "--timeline-tail-s",
        type=float,
        default=0.0,
        help="timeline seconds kept after the run",
    )
    r.add_argument("--slo", help="e.g. ttft_p95_ms=500,e2e_p95_ms=2000,error_rate=0.01")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_run)

    p = sub.add_parser("plot", help="re-plot a report (optionally with a timeline)")
    p.add_argument("report")
    p.add_argument("--timeline")
    p.add_argument("--timeline-tail-s", type=float, default=0.0)
    p.add_argument("--out")
    p.set_defaults(func=cmd_plot)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except (LoadTestError, ValueError) as exc:
        print(f"load_tests: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("load_tests: interrupted", file=sys.stderr)
        return 130
