"""The load generator: open-loop arrivals or closed-loop clients over httpx.

Knows scheduling (fixed-rate or Poisson arrivals, rate or client-count steps),
how to time a request (end to end; first token and the gaps between tokens from
SSE arrival times) and when to stop (duration, request cap, drain timeout);
knows nothing of what the numbers mean, which `report` computes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource, SSEError

from load_tests.scenarios import (
    PayloadOptions,
    RequestSpec,
    ScenarioPicker,
    build_request,
)
from load_tests.sse import read_event


class LoadTestError(Exception):
    """A run that cannot start; the message is one line a user can act on."""


def check_loopback(url: str) -> str:
    """Refuse any target that is not this machine.

    Args:
        url: the server's base URL.

    Returns:
        The URL without a trailing slash.

    Raises:
        LoadTestError: not http(s), or the host is not `localhost`, an address
            in 127.0.0.0/8, or ::1. Names other than `localhost` are refused
            because they may resolve anywhere.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadTestError(f"target must be an http(s) URL, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise LoadTestError(
                f"refusing {host!r}: load goes to loopback only "
                "(127.0.0.0/8, localhost or ::1)"
            ) from None
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            raise LoadTestError(
                f"refusing {host}: load goes to loopback only "
                "(127.0.0.0/8, localhost or ::1)"
            )
    return url.rstrip("/")


@dataclass(frozen=True)
class Stage:
    """One step of offered load: req/s (open loop) or clients (closed loop)."""

    load: float
    duration_s: float


@dataclass
class RunConfig:
    """Everything one run needs; `cli` builds it from flags."""

    url: str
    scenario: str = "chat_stream"
    mix: dict[str, float] | None = None
    mode: Literal["open", "closed"] = "open"
    arrival: Literal["poisson", "fixed"] = "poisson"
    stages: list[Stage] = field(default_factory=lambda: [Stage(2.0, 30.0)])
    max_requests: int = 1000
    request_timeout_s: float = 60.0
    drain_s: float = 30.0
    max_in_flight: int = 256
    payload: PayloadOptions = field(default_factory=PayloadOptions)
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        data = asdict(self)
        data["headers"] = sorted(self.headers)  # names only: never log a key
        return data


@dataclass
class RequestRecord:
    """What happened to one request, as the client saw it.

    Attributes:
        scenario: which scenario sent it.
        stage: index of the load step it was sent in.
        sent_s: seconds from the run's start to sending it.
        status: HTTP status; 0 when no response came (connection error,
            timeout, or cancelled at the end of the drain).
        e2e_s: send to last byte; None without a response.
        ttft_s: send to the first event carrying text (streaming only).
        itl_s: gaps between consecutive text-carrying events (streaming only).
        tokens: completion tokens (usage when the server sent it, else the
            number of text-carrying events).
        error: None on success; else `http_<status>`, `timeout`,
            `transport:<Exception>`, `stream_error`, `stream_incomplete`,
            `bad_response` or `cancelled`.
        retry_after: the Retry-After header of an error response.
        detail: the start of the error body or exception text, for a human.
    """

    scenario: str
    stage: int
    sent_s: float
    status: int = 0
    e2e_s: float | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None
    retry_after: str | None = None
    detail: str | None = None


@dataclass
class RunResult:
    """Records plus what the report needs to know about the run itself."""

    config: RunConfig
    records: list[RequestRecord]
    started_at: float  # wall clock (time.time()) at the run's start
    elapsed_s: float  # start to the later of the last send step and last response
    stage_starts_s: list[float]
    dropped: int  # open-loop arrivals not sent: max_in_flight reached


def arrival_offsets(
    rate: float, duration_s: float, arrival: str, rng: random.Random
) -> Iterator[float]:
    """Send times within one stage, in seconds from its start.

    Args:
        rate: requests per second; 0 or less sends nothing (an idle step).
        duration_s: length of the stage.
        arrival: "fixed" (evenly spaced) or "poisson" (exponential gaps).
        rng: the run's seeded generator.
    """
    if rate <= 0:
        return
    t = 0.0 if arrival == "fixed" else rng.expovariate(rate)
    while t < duration_s:
        yield t
        t += 1.0 / rate if arrival == "fixed" else rng.expovariate(rate)


class LoadRunner:
    """Runs one `RunConfig` against a server and returns its `RunResult`."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        config.url = check_loopback(config.url)
        self.picker = ScenarioPicker(config.scenario, config.mix)
        self.rng = random.Random(config.seed)
        self.records: list[RequestRecord] = []
        self._sent = 0
        self._dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._t0 = 0.0
        self._last_done = 0.0

    async def run(self) -> RunResult:
        cfg = self.config
        limits = httpx.Limits(
            max_connections=cfg.max_in_flight, max_keepalive_connections=64
        )
        # trust_env=False: a proxy from the environment must never see this load.
        async with httpx.AsyncClient(
            base_url=cfg.url,
            timeout=httpx.Timeout(cfg.request_timeout_s),
            limits=limits,
            headers=cfg.headers,
            trust_env=False,
            follow_redirects=False,
        ) as client:
            started_at = time.time()
            self._t0 = time.perf_counter()
            self._last_done = self._t0
            stage_starts: list[float] = []
            deadline = self._t0 + sum(s.duration_s for s in cfg.stages)
            for index, stage in enumerate(cfg.stages):
                stage_start = time.perf_counter()
                if stage_start >= deadline or self._sent >= cfg.max_requests:
                    break
                stage_starts.append(stage_start - self._t0)
                end = min(stage_start + stage.duration_s, deadline)
                if cfg.mode == "open":
                    await self._open_stage(client, index, stage, stage_start, end)
                else:
                    await self._closed_stage(client, index, stage, end)
            scheduled_until = time.perf_counter()
            await self._drain()
        return RunResult(
            config=cfg,
            records=sorted(self.records, key=lambda r: r.sent_s),
            started_at=started_at,
            elapsed_s=max(self._last_done, scheduled_until) - self._t0,
            stage_starts_s=stage_starts,
            dropped=self._dropped,
        )

    async def _open_stage(
        self,
        client: httpx.AsyncClient,
        index: int,
        stage: Stage,
        stage_start: float,
        end: float,
    ) -> None:
        cfg = self.config
        for offset in arrival_offsets(
            stage.load, stage.duration_s, cfg.arrival, self.rng
        ):
            at = stage_start + offset
            if at >= end or self._sent >= cfg.max_requests:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(self._tasks) >= cfg.max_in_flight:
                self._dropped += 1
                continue
            self._spawn(client, index)
        # An idle or truncated stage still lasts its time, so steps line up.
        remaining = end - time.perf_counter()
        if remaining > 0 and self._sent < cfg.max_requests:
            await asyncio.sleep(remaining)

    async def _closed_stage(
        self, client: httpx.AsyncClient, index: int, stage: Stage, end: float
    ) -> None:
        async def worker() -> None:
            while time.perf_counter() < end and self._sent < self.config.max_requests:
                self._sent += 1
                await self._one(client, index)

        clients = max(0, int(stage.load))
        if clients == 0:
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            return
        workers = [asyncio.create_task(worker()) for _ in range(clients)]
        # Each client stops sending at `end`; its last request gets the same
        # drain time as open-loop ones, then it is cancelled (and counted).
        limit = max(0.0, end - time.perf_counter()) + self.config.drain_s
        _, late = await asyncio.wait(workers, timeout=limit)
        for task in late:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _spawn(self, client: httpx.AsyncClient, index: int) -> None:
        # Counted here, not when the task first runs, so the cap is exact.
        self._sent += 1
        task = asyncio.create_task(self._one(client, index))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        pending = set(self._tasks)
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=self.config.drain_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient, stage: int) -> None:
        cfg = self.config
        spec = build_request(self.picker.pick(self.rng), cfg.payload, self.rng)
        sent = time.perf_counter()
        record = RequestRecord(spec.scenario, stage, sent - self._t0)
        self.records.append(record)
        try:
            if spec.stream:
                await self._stream(client, spec, record, sent)
            else:
                await self._plain(client, spec, record, sent)
        except asyncio.CancelledError:
            record.error = record.error or "cancelled"
            raise
        except httpx.TimeoutException:
            record.error = "timeout"
        except httpx.HTTPError as exc:
            record.error = f"transport:{type(exc).__name__}"
            record.detail = str(exc)[:200] or None
        finally:
            if record.e2e_s is not None:
                self._last_done = max(self._last_done, sent + record.e2e_s)

    async def _plain(
        self,
        client: httpx.AsyncClient,
        spec: RequestSpec,
        record: RequestRecord,
        sent: float,
    ) -> None:
        response = await client.post(spec.path, json=spec.body)
        record.e2e_s = time.perf_counter() - sent
        record.status = response.status_code
        if response.status_code != 200:
            _fail(record, response)
            return
        try:
            body = response.json()
        except ValueError:
            record.error = "bad_response"
            return
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict):
            record.tokens = int(usage.get("completion_tokens") or 0)

    async def _stream(
        self,
        client: httpx.AsyncClient,
        spec: RequestSpec,
        record: RequestRecord,
        sent: float,
    ) -> None:
        async with client.stream("POST", spec.path, json=spec.body) as response:
            record.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                record.e2e_s = time.perf_counter() - sent
                _fail(record, response)
                return
            last: float | None = None
            events = 0
            usage_tokens: int | None = None
            done = False
            try:
                # httpx-sse yields each event as its blank line arrives.
                async for sse in EventSource(response).aiter_sse():
                    now = time.perf_counter()
                    event = read_event(sse.data)
                    if event.error and record.error is None:
                        record.error = "stream_error"
                        record.detail = event.error[:200]
                    if event.usage:
                        usage_tokens = int(event.usage.get("completion_tokens") or 0)
                    if event.done:
                        done = True
                    if event.text:
                        events += 1
                        if last is None:
                            record.ttft_s = now - sent
                        else:
                            record.itl_s.append(now - last)
                        last = now
            except SSEError as exc:  # a 200 that is not an event stream
                record.error, record.detail = "not_sse", str(exc)[:200]
            record.e2e_s = time.perf_counter() - sent
            record.tokens = usage_tokens if usage_tokens is not None else events
            if not done and record.error is None:
                record.error = "stream_incomplete"


def _fail(record: RequestRecord, response: httpx.Response) -> None:
    record.error = f"http_{response.status_code}"
    record.retry_after = response.headers.get("retry-after")
    record.detail = response.text[:200] or None


def run(config: RunConfig) -> RunResult:
    """Run `config` to completion in a fresh event loop."""
    return asyncio.run(LoadRunner(config).run())
