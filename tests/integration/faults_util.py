"""Helpers of the fault tests: replicas and their processes, a client load
that records every answer, readiness waits. Processes are found by the PID
Serve reports for a replica (and their children by parent PID), never by name.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

APP = "ragserve"
CHAT = "/v1/chat/completions"


def replicas(deployment: str, app: str = APP) -> list[dict[str, Any]]:
    """The RUNNING replicas of a deployment, as Serve's controller reports them
    (with `replica_id` and `pid`)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deps = details["applications"][app]["deployments"]
    return [
        r
        for r in deps[deployment]["replicas"]
        if str(getattr(r["state"], "value", r["state"])) == "RUNNING"
    ]


def wait_replaced(
    deployment: str, old_ids: set[str], timeout_s: float = 240, app: str = APP
) -> dict[str, Any]:
    """Wait for a RUNNING replica that is not one of `old_ids`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        live = replicas(deployment, app)
        fresh = [r for r in live if r["replica_id"] not in old_ids]
        if fresh:
            return fresh[0]
        time.sleep(0.5)
    raise AssertionError(f"no new {deployment} replica within {timeout_s} s")


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def wait_ready(url: str, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    last = ""
    with httpx.Client(base_url=url, timeout=30) as c:
        while time.time() < deadline:
            try:
                r = c.get("/ready")
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(1)
    raise AssertionError(f"graph not ready within {timeout_s} s: {last}")


@dataclass
class Outcome:
    """One answer: HTTP status, Retry-After, and for a stream the error event
    it ended with (None when it finished)."""

    status: int
    retry_after: str | None = None
    stream_error: dict[str, Any] | None = None
    detail: str = ""
    done: bool = True

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.stream_error is None


def read_stream(r: httpx.Response) -> Outcome:
    """Read an SSE answer to its end; note a final error event."""
    error = None
    done = False
    for line in r.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            error = event["error"]
    return Outcome(r.status_code, r.headers.get("retry-after"), error, done=done)


def send(client: httpx.Client, method: str, path: str, **kw: Any) -> Outcome:
    """One request; a transport error or a client timeout (a hang) is status 0."""
    stream = bool(kw.get("json", {}).get("stream"))
    try:
        if stream:
            with client.stream(method, path, **kw) as r:
                if r.status_code != 200:
                    r.read()
                    return Outcome(
                        r.status_code, r.headers.get("retry-after"), None, r.text
                    )
                return read_stream(r)
        r = client.request(method, path, **kw)
        return Outcome(r.status_code, r.headers.get("retry-after"), None, r.text[:300])
    except httpx.HTTPError as exc:
        return Outcome(0, None, None, repr(exc))


@dataclass
class Load:
    """`clients` threads sending `request(client, i)` until stopped."""

    url: str
    request: Callable[[httpx.Client, int], Outcome]
    clients: int = 4
    timeout_s: float = 90
    outcomes: list[tuple[float, Outcome]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.clients):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 10)

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as c:
            i = 0
            while not self._stop.is_set():
                outcome = self.request(c, n * 100_000 + i)
                self.outcomes.append((time.time(), outcome))
                i += 1

    def wait_ok(self, count: int, since: float = 0.0, timeout_s: float = 240) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if sum(1 for t, o in list(self.outcomes) if o.ok and t >= since) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"fewer than {count} successes within {timeout_s} s: {self.summary()}"
        )

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, o in list(self.outcomes):
            key = str(o.status) + (" stream-error" if o.stream_error else "")
            counts[key] = counts.get(key, 0) + 1
        return counts


def kill(pid: int, sig: int) -> None:
    os.kill(pid, sig)
