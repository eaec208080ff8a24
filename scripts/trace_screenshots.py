"""Screenshots of one real request's trace in Phoenix, for docs/observability.md.

Knows how to send one chat request to a running graph, wait until its spans
have reached the viewer (Phoenix's REST API) and photograph the trace page
with headless Chromium; knows nothing of how the graph makes its spans.
Standard library only, so it runs under any Python 3.11.

    make traces && make serve          # in another terminal
    python scripts/trace_screenshots.py --api http://127.0.0.1:8000 \
        --viewer http://127.0.0.1:6006 --out docs/images
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PROG = "trace_screenshots"
STEP_SPANS = ("rag.request", "rag.embed", "rag.retrieve", "rag.rerank", "rag.generate")
WAIT_SPANS = ("queue.handle", "queue.batch", "queue.engine")
QUESTION = "How does ragserve batch requests?"
#: One PNG per selected span: the tree is the same, the details pane differs.
SHOTS = (
    ("trace-request.png", "rag.request"),
    ("trace-batch-wait.png", "queue.batch"),
    ("trace-generate.png", "rag.generate"),
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class ShotError(Exception):
    """A one-line, user-facing problem."""


def http_json(url: str, body: dict[str, Any] | None = None) -> tuple[Any, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return json.load(resp), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raise ShotError(
            f"{url} answered HTTP {exc.code}: {exc.read()[:200]!r}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ShotError(f"cannot reach {url} ({getattr(exc, 'reason', exc)})") from None


def ask(api: str, question: str, max_tokens: int) -> str:
    """One non-streaming RAG chat request; the trace id it answered with."""
    models, _ = http_json(f"{api}/v1/models")
    model = models["data"][0]["id"]
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": question}],
    }
    answer, headers = http_json(f"{api}/v1/chat/completions", body)
    trace_id = {k.lower(): v for k, v in headers.items()}.get("x-trace-id")
    if not trace_id:
        raise ShotError(
            f"{api} sent no x-trace-id: is tracing on (OTEL_EXPORTER_OTLP_ENDPOINT)?"
        )
    print(f"asked {question!r}: {answer['choices'][0]['message']['content']!r}")
    return str(trace_id)


def trace_spans(viewer: str, trace_id: str, wait_s: float) -> list[dict[str, Any]]:
    """The trace's spans from Phoenix, once every step and wait span is there."""
    query = urllib.parse.urlencode({"trace_id": trace_id, "limit": 1000})
    url = f"{viewer}/v1/projects/default/spans?{query}"
    wanted = set(STEP_SPANS) | set(WAIT_SPANS)
    deadline = time.monotonic() + wait_s
    names: set[str] = set()
    while time.monotonic() < deadline:
        spans = http_json(url)[0]["data"]
        names = {s["name"] for s in spans}
        if wanted <= names:
            return list(spans)
        time.sleep(2)
    missing = ", ".join(sorted(wanted - names))
    raise ShotError(f"trace {trace_id} in {viewer} lacks {missing} after {wait_s} s")


def span_page(viewer: str, spans: list[dict[str, Any]], name: str) -> str:
    """The trace page URL with the (first) span called `name` selected."""
    projects = http_json(f"{viewer}/v1/projects")[0]["data"]
    project = next(p["id"] for p in projects if p["name"] == "default")
    span = min((s for s in spans if s["name"] == name), key=lambda s: s["start_time"])
    trace_id = span["context"]["trace_id"]
    query = urllib.parse.urlencode({"selectedSpanNodeId": span["id"]})
    return f"{viewer}/projects/{project}/traces/{trace_id}?{query}"


def screenshot(chromium: str, url: str, out: Path, size: str, wait_ms: int) -> None:
    """Photograph `url` into `out`; `out` is replaced only by a whole PNG."""
    with tempfile.TemporaryDirectory(prefix="ragserve-chromium-") as tmp:
        shot = Path(tmp) / out.name
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={size}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={shot}",
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if done.returncode != 0 or not shot.exists():
            tail = done.stderr.strip()[-300:]
            raise ShotError(f"chromium failed on {url}: {tail}")
        shrink(shot)
        shutil.move(shot, out)
    print(f"{out} ({out.stat().st_size // 1024} KiB) <- {url}")


def shrink(png: Path, colors: int = 96) -> None:
    """Re-save with a small palette (a UI has few colours) when Pillow is here."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=colors)
    small.save(png, optimize=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the graph")
    parser.add_argument("--viewer", default="http://127.0.0.1:6006", help="Phoenix")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1, help="requests first")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--size", default="1400,1120", help="window, pixels")
    parser.add_argument("--render-ms", type=int, default=8000)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds for spans")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    api, viewer = ns.api.rstrip("/"), ns.viewer.rstrip("/")
    try:
        if not shutil.which(ns.chromium):
            raise ShotError(f"{ns.chromium} not found; apt-get install -y chromium")
        for _ in range(ns.warmup):
            # The first request after start-up pays one-off costs (lazy imports,
            # first FAISS search); the trace shown is a steady-state one.
            ask(api, ns.question, ns.max_tokens)
        trace_id = ask(api, ns.question, ns.max_tokens)
        spans = trace_spans(viewer, trace_id, ns.wait)
        print(f"trace {trace_id}: {len(spans)} spans in {viewer}")
        ns.out.mkdir(parents=True, exist_ok=True)
        for filename, name in SHOTS:
            url = span_page(viewer, spans, name)
            screenshot(ns.chromium, url, ns.out / filename, ns.size, ns.render_ms)
    except ShotError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
