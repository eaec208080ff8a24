"""The bench's CPU-seconds (P6): a server's whole process tree, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from load_tests.bench.cpu import read_procs, replica_app, tree_cpu_s
from load_tests.bench.sections import model_limit_row

BURN = (
    "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
)
WAIT = "import sys; sys.stdin.read()"


def test_a_childs_cpu_counts_for_its_parent_tree() -> None:
    # The child burns 0.4 CPU-s, then waits (alive) until stdin closes.
    child = subprocess.Popen([sys.executable, "-c", BURN + WAIT], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            procs = read_procs()
            if child.pid in procs and procs[child.pid].cpu_s >= 0.35:
                break
            time.sleep(0.1)
        assert read_procs()[child.pid].ppid == os.getpid()
        assert tree_cpu_s(os.getpid()) - read_procs()[os.getpid()].cpu_s >= 0.35
        assert tree_cpu_s(child.pid) >= 0.35
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def test_replicas_of_other_apps_are_told_apart_by_title() -> None:
    assert replica_app("ray::ServeReplica:nobatch:embedder") == "nobatch"
    assert replica_app("ray::ServeReplica:ragserve:generator.stats") == "ragserve"
    assert replica_app("/usr/bin/python -m load_tests.servers.graph_server") is None
    assert tree_cpu_s(-1) == 0.0  # no such process: nothing counted


def test_model_limit_row_is_graph_items_over_the_models_own_rate() -> None:
    run = {"throughput": {"requests_per_s": 20.0}, "requests": {"failed": 0}}
    failed = {"throughput": {"requests_per_s": 99.0}, "requests": {"failed": 3}}
    row = model_limit_row("embeddings-c32-x4", [run, failed], 4, 100.0, "x_texts_per_s")
    assert row["ratio_median"] == 0.8  # 20 req/s x 4 texts / 100 texts/s
    assert row["rounds"] == 1  # the round with errors is left out
    assert row["metric"] == "texts per s"


def test_cpu_is_cut_to_the_runs_own_window() -> None:
    from load_tests.bench.cpu import CpuSampler, cpu_between

    samples = [(10.0, 1.0), (11.0, 2.0), (13.0, 2.0), (14.0, 5.0)]
    assert cpu_between(samples, 10.5, 13.5) == 2.0  # 1.5 at 10.5, 3.5 at 13.5
    assert cpu_between(samples, 9.0, 12.0) is None  # not covered
    ticks = iter(range(100))
    sampler = CpuSampler(lambda: float(next(ticks)), interval_s=0.01).begin()
    time.sleep(0.1)
    taken = sampler.end()
    assert len(taken) >= 3
    assert [c for _, c in taken] == sorted(c for _, c in taken)


def test_targets_read_their_rows_and_judge_them() -> None:
    from load_tests.bench.targets import GRAPH, ONE_PROCESS, target_lines

    def row(section: str, metric: str, a: str, b: str, am: float, bm: float) -> dict:
        r = bm / am
        return {
            "section": section,
            "workload": "w",
            "metric": metric,
            "a": a,
            "b": b,
            "a_median": am,
            "b_median": bm,
            "ratio_median": r,
            "ratio_min": r,
            "ratio_max": r,
        }

    lines = target_lines(
        [
            row("overhead", "p50 latency (ms)", ONE_PROCESS, GRAPH, 30.0, 38.0),
            row("overhead", "CPU-ms per request", ONE_PROCESS, GRAPH, 20.0, 60.0),
            row("throughput", "requests/s", ONE_PROCESS, GRAPH, 10.0, 9.0),
        ]
    )
    p1, p6, p3 = (
        next(x for x in lines if x.startswith(f"| {p} ")) for p in ("P1", "P6", "P3")
    )
    assert "+8.0" in p1 and p1.endswith("| yes |")  # +8 ms is within +10
    assert "3.00" in p6 and p6.endswith("| **no** |")
    assert "0.90" in p3 and p3.endswith("| **no** |")
    assert target_lines([]) == []  # a run with no such rows has no section
