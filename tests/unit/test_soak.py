"""The soak's arithmetic and probes (load_tests.servers.soak), without a graph."""

from __future__ import annotations

import http.server
import json
import mmap
import os
import threading
from typing import Any

from load_tests import soak_inputs
from load_tests.procs import (
    mapping_kind,
    private_by_kind_mib,
    tree_memory_mib,
)
from load_tests.servers.soak import slope_mb_per_h, summarize_rss
from load_tests.soak_inputs import HOSTILE


def test_slope_is_mib_per_hour() -> None:
    # +1 MiB a minute is +60 MiB an hour, whatever the offset.
    points = [(1000.0 + 60 * i, 500.0 + i) for i in range(10)]
    assert slope_mb_per_h(points) == 60.0
    assert slope_mb_per_h([(0.0, 1.0), (60.0, 1.0), (120.0, 1.0)]) == 0.0
    assert slope_mb_per_h(points[:2]) is None


def test_rss_summary_skips_the_warm_up() -> None:
    samples = [
        {"t": 60.0 * i, "deployment": "embedder", "replica": "a", "rss_mb": r}
        for i, r in enumerate([100, 300, 400, 400, 400, 400])
    ]
    [row] = summarize_rss(samples, warmup_s=150)
    assert row["slope_mb_per_h"] == 0.0  # the climb was all warm-up
    assert (row["first_mb"], row["last_mb"], row["max_mb"]) == (100, 400, 400)
    assert row["samples"] == 6


def test_rss_summary_tells_growth_that_levels_off_from_a_leak() -> None:
    levels = [100 + min(i, 20) * 10 for i in range(31)]  # grows, then flat
    leak = [100 + i * 2 for i in range(31)]  # never stops
    samples = [
        {"t": 60.0 * i, "deployment": d, "replica": d, "rss_mb": r}
        for d, series in (("levels", levels), ("leak", leak))
        for i, r in enumerate(series)
    ]
    rows = {r["deployment"]: r for r in summarize_rss(samples, warmup_s=120)}
    assert rows["levels"]["slope_mb_per_h"] > 100  # the whole-run slope misleads
    assert rows["levels"]["last_third_slope_mb_per_h"] == 0.0
    assert rows["leak"]["last_third_slope_mb_per_h"] == 120.0


def test_rss_summary_tells_shared_growth_from_private() -> None:
    # RSS climbs (object store pages, say) while the private pages stay put.
    samples = [
        {"t": 60.0 * i, "deployment": "e", "replica": "e", "rss_mb": 100.0 + i}
        | {"uss_mb": 80.0}
        for i in range(30)
    ]
    [row] = summarize_rss(samples, warmup_s=0)
    assert row["last_third_slope_mb_per_h"] == 60.0
    assert row["uss_last_third_slope_mb_per_h"] == 0.0
    assert (row["first_uss_mb"], row["last_uss_mb"]) == (80.0, 80.0)


def test_rss_summary_gives_each_kind_of_page_first_and_last() -> None:
    samples = [
        {"t": 60.0 * i, "deployment": "i", "replica": "i", "rss_mb": 100.0}
        | {"private_mb": {"anon": 10.0 + i, "lib": 30.0}}
        for i in range(5)
    ]
    [row] = summarize_rss(samples, warmup_s=0)
    assert row["private_mb_first_last"] == {"anon": [10.0, 14.0], "lib": [30.0, 30.0]}


def test_memory_of_this_process_tree_is_read() -> None:
    mine = tree_memory_mib(os.getpid())
    assert mine["rss_mb"] >= mine["uss_mb"] > 1
    assert tree_memory_mib(2**22 + 12345) == {"rss_mb": 0, "uss_mb": 0}


def test_private_pages_are_sorted_by_mapping_kind() -> None:
    assert mapping_kind("[heap]") == "heap"
    assert mapping_kind("[anon]") == mapping_kind("") == "anon"
    assert mapping_kind("/dev/zero") == "anon"
    assert mapping_kind("[stack]") == "stack"
    assert mapping_kind("/usr/lib/x86_64-linux-gnu/libc.so.6") == "lib"
    assert mapping_kind("/dev/shm/plasma") == "file"
    before = private_by_kind_mib(os.getpid())
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # as pymalloc maps arenas
    block = mmap.mmap(-1, 64 * 2**20, flags=private)
    block.write(b"x" * (64 * 2**20))  # touched: its pages are now ours
    after = private_by_kind_mib(os.getpid())
    uss = tree_memory_mib(os.getpid())["uss_mb"]
    block.close()
    assert after["anon"] - before["anon"] >= 60
    assert before["lib"] > 1  # at least the interpreter's own libraries
    assert abs(sum(after.values()) - uss) < 8  # the same pages USS counts
    assert private_by_kind_mib(2**22 + 12345) == dict.fromkeys(after, 0.0)


def test_hostile_inputs_are_distinct_and_sendable() -> None:
    names = [h.name for h in HOSTILE]
    assert len(names) == len(set(names))
    for h in HOSTILE:
        assert h.path.startswith("/v1/")
    # The surrogate case is raw bytes a JSON encoder would not produce.
    surrogate = next(h for h in HOSTILE if "surrogate" in h.name)
    assert b"\\ud800" in surrogate.body
    assert json.loads(surrogate.body)["messages"][0]["content"].startswith("a\x00b")


def test_hostile_inputs_are_timed_against_a_server(capsys: Any) -> None:
    """`python -m load_tests.soak_inputs` against a real (tiny) HTTP server."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(400)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert soak_inputs.main(["--url", url, "--repeat", "2"]) == 0
    finally:
        server.shutdown()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == [h.name for h in HOSTILE]
    assert all(r["statuses"] == [400] for r in rows)
    assert all(0 < r["median_ms"] <= r["max_ms"] for r in rows)
