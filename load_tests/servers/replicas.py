"""Replicas over time: a poller of Serve's status and the timeline it writes.

The poller imports Ray, so it runs in the process that owns the Ray
connection (`graph_server`) or as its own process (`python -m
load_tests.servers.replicas`), never inside the load generator, which reads
the timeline with `load_tests.timeline`. The timeline is JSON lines of two
kinds. A sample per deployment per poll:

    {"t": <unix time>, "app": "ragserve", "deployment": "embedder",
     "running": 2, "target": 3, "status": "UPSCALING", "states": {...}}

and, read from the Serve controller's log, each autoscaling decision with the
ongoing requests the controller based it on:

    {"t": ..., "event": "scale", "app": "autoscale", "deployment": "embedder",
     "from": 1, "to": 2, "ongoing_requests": 4.0, "running": 1}
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("load_tests.servers.replicas")

_DECISION = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) .*?"
    r"(?P<dir>Upscaling|Downscaling) Deployment\(name='(?P<dep>[^']+)', "
    r"app='(?P<app>[^']+)'\) from (?P<old>\d+) to (?P<new>\d+) replicas\. "
    r"Current ongoing requests: (?P<ongoing>[\d.]+), "
    r"current running replicas: (?P<running>\d+)"
)


def parse_decision(line: str) -> dict[str, Any] | None:
    """A Serve controller log line -> a scale event, or None if it is not one."""
    match = _DECISION.search(line)
    if not match:
        return None
    t = time.mktime(time.strptime(match["ts"], "%Y-%m-%d %H:%M:%S"))
    return {
        "t": t + int(match["ms"]) / 1000.0,
        "event": "scale",
        "app": match["app"],
        "deployment": match["dep"],
        "from": int(match["old"]),
        "to": int(match["new"]),
        "ongoing_requests": float(match["ongoing"]),
        "running": int(match["running"]),
    }


def sample_serve() -> list[dict[str, Any]]:
    """One sample per deployment of every Serve application (needs Ray)."""
    now = time.time()
    try:
        return _from_details(now)
    except Exception:
        # The detailed status is not a public API; the public one still gives
        # replica counts if a Ray upgrade changes it.
        return _from_status(now)


def _from_details(now: float) -> list[dict[str, Any]]:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    samples = []
    for app_name, app in (details.get("applications") or {}).items():
        for dep_name, dep in (app.get("deployments") or {}).items():
            states: dict[str, int] = {}
            for replica in dep.get("replicas") or []:
                state = _name(replica.get("state"))
                states[state] = states.get(state, 0) + 1
            samples.append(
                {
                    "t": now,
                    "app": app_name,
                    "deployment": dep_name,
                    "running": states.get("RUNNING", 0),
                    "target": dep.get("target_num_replicas"),
                    "status": _name(dep.get("status")),
                    "states": states,
                }
            )
    return samples


def _from_status(now: float) -> list[dict[str, Any]]:
    from ray import serve

    samples = []
    for app_name, app in serve.status().applications.items():
        for dep_name, dep in app.deployments.items():
            states = {_name(k): v for k, v in dep.replica_states.items()}
            samples.append(
                {
                    "t": now,
                    "app": app_name,
                    "deployment": dep_name,
                    "running": states.get("RUNNING", 0),
                    "target": None,
                    "status": _name(dep.status),
                    "states": states,
                }
            )
    return samples


def _name(value: Any) -> str:
    # Serve's states are str-valued enums: "RUNNING", not "ReplicaState.RUNNING".
    return str(getattr(value, "value", value))


class _LogTail:
    """New lines of the Serve controller's logs since the last read."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.offsets: dict[Path, int] = {}

    def decisions(self) -> list[dict[str, Any]]:
        if self.log_dir is None:
            return []
        out = []
        for path in sorted(self.log_dir.glob("serve/controller_*.log")):
            try:
                with path.open("r", encoding="utf-8", errors="replace") as f:
                    f.seek(self.offsets.get(path, 0))
                    chunk = f.read()
                    # Only whole lines: a half-written one is read next time.
                    cut = chunk.rfind("\n") + 1
                    self.offsets[path] = self.offsets.get(path, 0) + len(
                        chunk[:cut].encode("utf-8", errors="replace")
                    )
            except OSError:
                continue
            for line in chunk[:cut].splitlines():
                event = parse_decision(line)
                if event:
                    out.append(event)
        return out


def ray_log_dir() -> Path | None:
    """This Ray session's log folder, when this process is connected to Ray."""
    try:
        import ray

        node = ray._private.worker._global_node
        return Path(node.get_logs_dir_path()) if node is not None else None
    except Exception:
        return None


def poll_until(
    path: Path,
    stop: threading.Event,
    interval_s: float = 1.0,
    log_dir: Path | None = None,
) -> None:
    """Append samples (and scale events) to `path` every `interval_s` until
    `stop` is set. Each poll asks the Serve controller for its status, which
    costs it a little CPU: keep the interval at 0.5 s or more."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = _LogTail(log_dir)
    with path.open("a", encoding="utf-8") as out:
        while not stop.is_set():
            try:
                for entry in [*sample_serve(), *tail.decisions()]:
                    out.write(json.dumps(entry) + "\n")
                out.flush()
            except Exception as exc:  # a poll must never take the server down
                logger.debug("serve status poll failed: %s", exc)
            stop.wait(interval_s)


def start_poller(
    path: Path, interval_s: float = 1.0, log_dir: Path | None = None
) -> tuple[threading.Thread, threading.Event]:
    """Poll in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=poll_until,
        args=(path, stop, interval_s, log_dir),
        name="replica-poller",
        daemon=True,
    )
    thread.start()
    return thread, stop


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m load_tests.servers.replicas`: poll a running Ray's Serve."""
    import argparse

    import ray

    parser = argparse.ArgumentParser(prog="python -m load_tests.servers.replicas")
    parser.add_argument("--address", default="auto", help="Ray address (auto)")
    parser.add_argument("--out", required=True, help="timeline JSONL to append to")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument(
        "--duration", type=float, default=300.0, help="stop after this many seconds"
    )
    ns = parser.parse_args(argv)
    ray.init(address=ns.address, logging_level="ERROR")
    stop = threading.Event()
    timer = threading.Timer(ns.duration, stop.set)
    timer.start()
    try:
        poll_until(Path(ns.out), stop, ns.interval)
    except KeyboardInterrupt:
        pass
    finally:
        timer.cancel()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
