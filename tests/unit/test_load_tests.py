"""The load generator against a small real SSE server on 127.0.0.1 (no Ray).

The server streams with known pauses (first token after 200 ms, then one
every 50 ms), so the measured TTFT and inter-token latency can be checked
against what it actually did.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from load_tests.cli import EXIT_SLO, main
from load_tests.report import parse_slo

FIRST_TOKEN_S = 0.2
TOKEN_GAP_S = 0.05
TOKENS = 5


def _sse_app() -> FastAPI:
    app = FastAPI()

    def _overload(model: str | None) -> JSONResponse | None:
        if model == "overloaded":
            body = {"error": {"message": "busy", "type": "rate_limit_error"}}
            return JSONResponse(body, status_code=429, headers={"Retry-After": "3"})
        if model == "unavailable":
            body = {"error": {"message": "down", "type": "service_unavailable_error"}}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "7"})
        return None

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        refused = _overload(body.get("model"))
        if refused is not None:
            return refused
        if not body.get("stream"):
            await asyncio.sleep(body.get("max_tokens", 1) * 0.01)
            return {
                "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": TOKENS},
            }

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], **extra: Any) -> str:
                payload = {"choices": [{"delta": delta}], **extra}
                return f"data: {json.dumps(payload)}\n\n"

            # The role chunk carries no text: it must not count as the first token.
            yield chunk({"role": "assistant", "content": ""})
            await asyncio.sleep(FIRST_TOKEN_S)
            for i in range(TOKENS):
                if i:
                    await asyncio.sleep(TOKEN_GAP_S)
                yield chunk({"content": f"t{i} "})
            usage = {"prompt_tokens": 3, "completion_tokens": TOKENS}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await request.json()
        await asyncio.sleep(float(body.get("delay", 0)))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return {"data": [{"index": i, "embedding": [0.0]} for i in range(len(texts))]}

    @app.post("/v1/rerank")
    async def rerank() -> Any:
        await asyncio.sleep(1.0)  # slow on purpose: open-loop tests send past it
        return {"results": [{"index": 0, "relevance_score": 1.0}]}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sse_url() -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        _sse_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline:
            pytest.fail("test SSE server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def _run(out: Path, url: str, *flags: str) -> tuple[int, dict[str, Any]]:
    code = main(["run", "--url", url, "--out", str(out), "-q", *flags])
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return code, report


# --- latency --------------------------------------------------------------------


def test_ttft_and_inter_token_latency_follow_the_server(
    sse_url: str, tmp_path: Path
) -> None:
    code, report = _run(
        tmp_path,
        sse_url,
        "--scenario=chat_stream",
        "--mode=closed",
        "--concurrency=2",
        "--duration=1.5",
        "--max-requests=4",
        "--no-plot",
    )
    assert code == 0
    assert report["requests"] == {
        "sent": 4,
        "responses": 4,
        "succeeded": 4,
        "failed": 0,
    }
    ttft = report["latency"]["ttft"]
    itl = report["latency"]["itl"]
    e2e = report["latency"]["e2e"]
    assert ttft["count"] == 4
    assert FIRST_TOKEN_S * 1000 * 0.95 <= ttft["p50_ms"] < FIRST_TOKEN_S * 1000 + 400
    assert itl["count"] == 4 * (TOKENS - 1)
    assert TOKEN_GAP_S * 1000 * 0.8 <= itl["p50_ms"] < TOKEN_GAP_S * 1000 + 150
    assert e2e["p50_ms"] >= (FIRST_TOKEN_S + (TOKENS - 1) * TOKEN_GAP_S) * 1000
    # Tokens come from the usage chunk, not from guessing.
    assert report["throughput"]["completion_tokens"] == 4 * TOKENS


# --- scheduling and bounds ------------------------------------------------------


def test_open_loop_sends_on_schedule_without_waiting_for_responses(
    sse_url: str, tmp_path: Path
) -> None:
    # The rerank route takes 1 s; 10 req/s for 1 s must still send 10.
    started = time.perf_counter()
    code, report = _run(
        tmp_path,
        sse_url,
        "--scenario=rerank",
        "--rate=10",
        "--arrival=fixed",
        "--duration=1",
        "--no-plot",
    )
    assert code == 0
    assert report["requests"]["sent"] == 10
    assert report["requests"]["succeeded"] == 10
    assert time.perf_counter() - started < 4  # ~1 s sending + 1 s draining
    # Over time: all sent in the first second, all answered a second later.
    per_second = report["per_second"]
    assert per_second[0] == {"t_s": 0, "sent": 10, "completed": 0, "failed": 0}
    assert sum(b["completed"] for b in per_second[1:]) == 10


def test_max_requests_caps_the_run(sse_url: str, tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        sse_url,
        "--scenario=embeddings",
        "--rate=50",
        "--duration=5",
        "--max-requests=7",
        "--no-plot",
    )
    assert code == 0
    assert report["requests"]["sent"] == 7
    assert report["elapsed_s"] < 3


def test_ramp_reports_each_step_at_its_offered_rate(
    sse_url: str, tmp_path: Path
) -> None:
    code, report = _run(
        tmp_path,
        sse_url,
        "--scenario=embeddings",
        "--rate=5,20,0",
        "--arrival=fixed",
        "--step-s=0.6",
        "--duration=10",
        "--no-plot",
    )
    assert code == 0
    stages = report["stages"]
    assert [s["offered"] for s in stages] == [5, 20, 0]
    assert [s["requests"]["sent"] for s in stages] == [3, 12, 0]
    assert report["elapsed_s"] == pytest.approx(1.8, abs=0.5)


def test_a_slow_server_cannot_keep_the_run_going(sse_url: str, tmp_path: Path) -> None:
    # Closed loop against the 1 s route: the run ends at duration + drain and
    # the cut-off requests are counted, not lost.
    started = time.perf_counter()
    code, report = _run(
        tmp_path,
        sse_url,
        "--scenario=rerank",
        "--mode=closed",
        "--concurrency=3",
        "--duration=0.2",
        "--drain-s=0.3",
        "--no-plot",
    )
    assert code == 0
    assert time.perf_counter() - started < 1.0 + 0.5
    assert report["requests"]["sent"] == 3
    assert report["errors"]["by_kind"] == {"cancelled": 3}
    assert report["requests"]["responses"] == 0


# --- errors, SLOs, outputs ------------------------------------------------------


def test_429_and_503_are_counted_apart_with_retry_after(
    sse_url: str, tmp_path: Path
) -> None:
    code, busy = _run(
        tmp_path / "busy",
        sse_url,
        "--scenario=chat",
        "--model=overloaded",
        "--rate=10",
        "--arrival=fixed",
        "--duration=0.5",
        "--no-plot",
    )
    _, down = _run(
        tmp_path / "down",
        sse_url,
        "--scenario=chat_stream",
        "--model=unavailable",
        "--rate=10",
        "--arrival=fixed",
        "--duration=0.3",
        "--no-plot",
    )
    assert code == 0  # errors are reported, not fatal, without an SLO
    assert busy["error_rate"] == 1.0
    assert busy["errors"]["status_429"] == 5
    assert busy["errors"]["status_503"] == 0
    assert busy["errors"]["retry_after_seen"] == 5
    assert busy["errors"]["retry_after_values"] == ["3"]
    assert down["errors"]["status_503"] == 3
    assert down["errors"]["retry_after_values"] == ["7"]
    assert down["requests"]["responses"] == down["requests"]["sent"] == 3


def test_broken_slo_exits_non_zero_with_one_line_reason(
    sse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--scenario=chat_stream", "--rate=4", "--duration=0.5", "--no-plot"]
    code, report = _run(tmp_path / "a", sse_url, *flags, "--slo=ttft_p95_ms=50")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_SLO
    assert err[-1].startswith("SLO failed: ttft_p95_ms ")
    assert "> 50" in err[-1]
    assert report["slo"]["broken"]

    code, _ = _run(
        tmp_path / "b", sse_url, *flags, "--slo=ttft_p95_ms=5000,error_rate=0"
    )
    assert code == 0


def test_slo_on_something_not_measured_fails() -> None:
    with pytest.raises(ValueError, match="unknown SLO"):
        parse_slo("ttft_p42_ms=1")


def test_report_json_and_png_are_written(sse_url: str, tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        sse_url,
        "--scenario=mix",
        "--mix=chat_stream=2,chat=1,embeddings=1",
        "--rate=8,16",
        "--duration=1",
    )
    assert code == 0
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    assert set(report["scenarios"]) <= {"chat_stream", "chat", "embeddings"}
    assert len(report["stages"]) == 2
    assert report["requests"]["failed"] == 0
