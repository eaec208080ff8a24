"""Node loss on a real two-node Ray cluster (loopback, `ray.cluster_utils`):
the generator's node stops, `/ready` names the generator missing and chat
answers 503 within its bound; a node with the resource comes back and the same
ingress serves again.

The cluster runs in its own process (`two_node_graph.py`): this process may
hold the session graph's Ray driver. The test is ordered before the session
graph starts (`own_cluster`, see conftest), so the two never share the CPUs.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import free_port
from tests.integration.faults_util import CHAT, send, wait_ready

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.own_cluster, pytest.mark.slow]


class ClusterProcess:
    """The two-node driver process and its line protocol."""

    def __init__(self, index: Path, model: Path, port: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.two_node_graph",
                f"--index={index}",
                f"--model={model}",
                f"--port={port}",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout_s: float) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"cluster process exited ({self.proc.returncode})"
                    ) from None
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} from the cluster process in {timeout_s} s")

    def command(self, command: str, reply: str, timeout_s: float = 120) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.expect(reply, timeout_s)

    def replicas(self) -> dict[str, list[str]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("replicas\n")
        self.proc.stdin.flush()
        return json.loads(self.expect("REPLICAS", 60).split(" ", 1)[1])

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=90)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def two_nodes(
    docs_index: Path, tiny_llama: Path
) -> Iterator[tuple[ClusterProcess, str]]:
    cluster = ClusterProcess(docs_index, tiny_llama, free_port())
    try:
        url = cluster.expect("READY", 900).split()[1]
        wait_ready(url, 600)
        yield cluster, url
    finally:
        cluster.close()


def chat(c: httpx.Client, **kw: Any) -> Any:
    body = {"messages": [{"role": "user", "content": "What is ragserve?"}]}
    return send(c, "POST", CHAT, json={**body, "max_tokens": 8, **kw})


def test_losing_the_generator_node_is_a_503_and_its_return_serves_again(
    two_nodes: tuple[ClusterProcess, str],
) -> None:
    cluster, url = two_nodes
    with httpx.Client(base_url=url, timeout=60) as c:
        assert chat(c).status == 200
        before = cluster.replicas()

        cluster.command("remove", "REMOVED")
        deadline = time.time() + 60
        nodes: dict[str, str] = {}
        while time.time() < deadline:
            r = c.get("/ready")
            nodes = r.json().get("nodes", {})
            if r.status_code == 503 and nodes.get("generator", "").startswith(
                "missing"
            ):
                break
            time.sleep(1)
        assert nodes.get("generator", "").startswith("missing"), nodes
        assert nodes["embedder"] == "ready", nodes

        # Nothing waits for a generator that is not there past its bound.
        for stream in (False, True):
            outcome = chat(c, stream=stream)
            assert outcome.status == 503, outcome
            assert outcome.retry_after == "3", outcome
        # The steps that live on the head keep answering.
        r = c.post("/v1/retrieve", json={"query": "batching"})
        assert r.status_code == 200, r.text

        cluster.command("add", "ADDED")
        wait_ready(url, 900)
        assert chat(c).status == 200
        assert chat(c, stream=True).ok
        after = cluster.replicas()
        # The same ingress served throughout; the generator is a new replica.
        assert after["ingress"] == before["ingress"], (before, after)
        assert after["generator"] and after["generator"] != before["generator"]
