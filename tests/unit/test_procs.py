"""The /proc readers the benchmarks and release tests weigh graphs with."""

from __future__ import annotations

import os
import subprocess
import time

from load_tests.procs import replica_rss_mib, tree_rss_mib


def test_a_tree_counts_its_children_and_replicas_go_by_deployment() -> None:
    # A child named the way Ray titles a Serve replica's worker process.
    child = subprocess.Popen(
        ["bash", "-c", "exec -a 'ray::ServeReplica:ragserve:embedder-1a2b' sleep 30"]
    )
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not replica_rss_mib(os.getpid()):
            time.sleep(0.05)
        replicas = replica_rss_mib(os.getpid())
        assert list(replicas) == ["embedder-1a2b"] and replicas["embedder-1a2b"] > 0
        assert replica_rss_mib(os.getpid(), app="other") == {}
        assert tree_rss_mib(os.getpid()) >= tree_rss_mib(child.pid) > 0
    finally:
        child.kill()
        child.wait()
    assert replica_rss_mib(os.getpid()) == {}
