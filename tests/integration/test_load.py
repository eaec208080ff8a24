"""The load generator against the real graph, run the way a user runs it.

Uses the session's shared graph (`serve_graph`), sends a small fixed-rate mix
for 10 s from its own process, and checks the report a user would read: every
request answered, no errors, TTFT measured for the streaming requests, and
numbers that add up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def test_mix_against_the_graph_reports_every_request(
    serve_graph: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "load"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "load_tests",
            "run",
            "--url",
            serve_graph["url"],
            "--scenario=mix",
            "--mix=chat_stream=2,chat=1,embeddings=2,rerank=1",
            "--rate=1.5",
            "--arrival=fixed",
            "--duration=10",
            "--max-requests=40",
            "--max-tokens=8",
            "--drain-s=40",
            "--slo=error_rate=0",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())

    requests = report["requests"]
    assert requests["sent"] == 15  # 1.5 req/s for 10 s, on a fixed schedule
    assert requests["responses"] == requests["succeeded"] == requests["sent"]
    assert report["error_rate"] == 0
    assert report["errors"]["by_status"] == {}

    scenarios = report["scenarios"]
    assert sum(s["requests"]["sent"] for s in scenarios.values()) == 15
    stream = scenarios["chat_stream"]
    assert stream["latency"]["ttft"]["count"] == stream["requests"]["succeeded"] > 0
    ttft = stream["latency"]["ttft"]["p50_ms"]
    assert 0 < ttft <= stream["latency"]["e2e"]["p50_ms"]
    # The tiny generator is asked for 8 tokens; usage must say so.
    assert (
        0 < stream["throughput"]["completion_tokens"] <= 8 * stream["requests"]["sent"]
    )
    for name in ("embeddings", "rerank"):
        if name in scenarios:
            assert scenarios[name]["latency"]["ttft"]["count"] == 0
            assert scenarios[name]["latency"]["e2e"]["p50_ms"] > 0
    assert 0 < report["throughput"]["requests_per_s"] <= 15 / 9
    assert (out / "report.png").stat().st_size > 10_000
