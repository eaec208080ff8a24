"""The engine memory probe's sampling (load_tests.engine_memory), without an engine."""

from __future__ import annotations

import os
import subprocess
import sys

from load_tests.engine_memory import parse_args, sample


def test_a_sample_names_each_process_with_its_rss_and_uss() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        row = sample(7)
    finally:
        child.kill()
        child.wait()
    assert row["chunks"] == 7
    mine = [v for k, v in row.items() if k.endswith(f":{os.getpid()}")]
    theirs = [v for k, v in row.items() if k.endswith(f":{child.pid}")]
    assert mine and theirs
    assert mine[0]["rss_mb"] >= mine[0]["uss_mb"] > 1


def test_the_probe_runs_the_generators_kernel_cache_bound_unless_told() -> None:
    assert parse_args([]).onednn_cache == 0
    assert parse_args(["--onednn-primitive-cache", "default"]).onednn_cache is None
    assert parse_args(["--onednn-primitive-cache", "64"]).onednn_cache == 64
