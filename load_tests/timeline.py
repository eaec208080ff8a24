"""Reading a replica timeline (JSON lines written by the graph's bench server).

A sample per deployment per poll:

    {"t": <unix time>, "app": "ragserve", "deployment": "embedder",
     "running": 2, "target": 3, "status": "UPSCALING", "states": {...}}

and each autoscaling decision read from the Serve controller's log:

    {"t": ..., "event": "scale", "app": "autoscale", "deployment": "embedder",
     "from": 1, "to": 2, "ongoing_requests": 4.0, "running": 1}

Knows the file format only; the poller lives in `load_tests.servers.replicas`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_timeline(
    path: Path, start: float | None = None, end: float | None = None
) -> list[dict[str, Any]]:
    """Entries of a timeline file, optionally within [start, end] (unix time).

    Lines that are not JSON (a poller killed mid-write) are skipped.
    """
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        t = entry.get("t") if isinstance(entry, dict) else None
        if not isinstance(t, int | float):
            continue
        if (start is None or t >= start) and (end is None or t <= end):
            out.append(entry)
    return out
