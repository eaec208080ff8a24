"""The eval's target over HTTP: a running graph's `/v1/retrieve` and
`/v1/chat/completions` (`ragserve eval --url`).

Knows those two routes' bodies and the release pin header; knows nothing of
the graph's code. Only end-to-end times are seen from here.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from retrieval.types import Hit


class HttpTargetError(RuntimeError):
    """The graph could not be reached or refused a call (one line)."""


class HttpTarget:
    """A running graph, optionally pinned to one release.

    Args:
        url: the graph's base URL.
        release: sent as `x-ragserve-release` (None: the graph routes).
        rerank: whether the graph reranks (a reranked order is asked for).
        max_tokens: completion tokens per answer.
        timeout_s: per call.
    """

    def __init__(
        self,
        url: str,
        release: str | None = None,
        rerank: bool = True,
        max_tokens: int = 128,
        timeout_s: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.release = release
        self.rerank_enabled = rerank
        self.max_tokens = max_tokens
        headers = {}
        if release:
            headers["x-ragserve-release"] = release
        if os.environ.get("RAGSERVE_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['RAGSERVE_API_KEY']}"
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout_s
        )
        self._served: set[str] = set()

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "http",
            "url": self.url,
            "release": self.release,
            "served_by": sorted(self._served),
        }

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise HttpTargetError(
                f"cannot reach the graph at {self.url} ({type(exc).__name__}); "
                "is `ragserve serve` running there?"
            ) from None
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            message = (data.get("error") or {}).get("message") or response.text[:200]
            raise HttpTargetError(f"{path}: {response.status_code} {message}")
        if "x-ragserve-release" in response.headers:
            self._served.add(response.headers["x-ragserve-release"])
        return data

    async def retrieve(self, query: str, k: int, rerank: bool) -> list[Hit]:
        data = await self._post(
            "/v1/retrieve", {"query": query, "top_k": k, "top_n": k, "rerank": rerank}
        )
        return [_hit(c) for c in data["data"]]

    async def answer(self, query: str) -> tuple[str, list[Hit]]:
        data = await self._post(
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": query}],
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
                "seed": 0,
            },
        )
        text = data["choices"][0]["message"]["content"] or ""
        return text, [_hit(c) for c in data.get("citations") or []]

    def step_times(self) -> dict[str, list[float]]:
        return {}

    async def aclose(self) -> None:
        await self._client.aclose()


def _hit(c: dict[str, Any]) -> Hit:
    return Hit(c["chunk_id"], c["doc_id"], c["text"], float(c["score"]), c.get("title"))
