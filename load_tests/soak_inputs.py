"""Hostile requests the soak mixes in: what each one is and how it is sent.

Knows the wire shapes only (raw bytes where JSON encoders would refuse them,
e.g. a lone surrogate); knows nothing of what the server should answer: the
soak reports each input's statuses and times as they come. Run alone, it
times each input against a graph that is already serving:

    python -m load_tests.soak_inputs --url http://127.0.0.1:8000 --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _user(content: str, **kw: Any) -> bytes:
    return _json({"messages": [{"role": "user", "content": content}], **kw})


HOSTILE: list[Hostile] = [
    Hostile("malformed json", CHAT, b'{"messages": ['),
    Hostile("empty body", CHAT, b""),
    Hostile("unknown model", CHAT, _user("hi", model="gpt-4o")),
    Hostile(
        "nul and lone surrogate",
        CHAT,
        b'{"messages": [{"role": "user", "content": "a\\u0000b\\ud800c"}]}',
    ),
    Hostile(
        "degenerate sampling (schemathesis)",
        CHAT,
        _user(
            "",
            stop=[""],
            top_p=5e-324,
            repetition_penalty=5e-324,
            temperature=0.0,
        ),
    ),
    Hostile("negative max_tokens", CHAT, _user("hi", max_tokens=-1)),
    Hostile(
        "20000 messages",
        CHAT,
        _json({"messages": [{"role": "user", "content": "x"}] * 20000}),
    ),
    Hostile("10 MB message", CHAT, _user("a" * 10_000_000, max_tokens=4)),
    Hostile("huge top_k", "/v1/retrieve", _json({"query": "x", "top_k": 10**9})),
    Hostile(
        "10000 rerank documents",
        "/v1/rerank",
        _json({"query": "x", "documents": ["doc"] * 10000}),
    ),
    Hostile(
        "10000 embedding inputs", "/v1/embeddings", _json({"input": ["x"] * 10000})
    ),
    Hostile(
        "bad X-Request-Timeout",
        CHAT,
        _user("hi", max_tokens=4),
        {"X-Request-Timeout": "forever"},
    ),
    Hostile("text/plain body", CHAT, b"hello", {"content-type": "text/plain"}),
]


def send_hostile(url: str, item: Hostile, timeout_s: float = 120) -> dict[str, Any]:
    """Send one hostile request; its status (0: no answer) and time in ms."""
    headers = {"content-type": "application/json", **item.headers}
    began = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=timeout_s) as c:
            r = c.post(item.path, content=item.body, headers=headers)
        status = r.status_code
    except httpx.HTTPError:
        status = 0
    return {
        "name": item.name,
        "status": status,
        "ms": (time.perf_counter() - began) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    """Send every hostile input `--repeat` times, one at a time; print each
    one's statuses and its median and slowest time (ms) as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.soak_inputs")
    parser.add_argument("--url", required=True, help="a serving graph")
    parser.add_argument("--repeat", type=int, default=7)
    ns = parser.parse_args(argv)
    if ns.repeat < 1:
        parser.error("--repeat must be at least 1")
    for item in HOSTILE:
        runs = [send_hostile(ns.url, item) for _ in range(ns.repeat)]
        ms = [r["ms"] for r in runs]
        row = {
            "name": item.name,
            "statuses": sorted({r["status"] for r in runs}),
            "median_ms": round(statistics.median(ms), 1),
            "max_ms": round(max(ms), 1),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
