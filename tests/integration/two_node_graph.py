"""A two-node Ray cluster on loopback serving the graph, driven over stdin.

Run by `test_two_nodes.py` in its own process (one process holds one Ray
driver; the session's graph has its own). The head node runs Serve, the
ingress and the three steps; a second node offers the custom resource
`generator_node`, which the generator requires, so the generator runs there.

Protocol: prints `READY <url>` once deployed, then reads commands from stdin:
`remove` stops the second node (prints `REMOVED`), `add` starts a new node
with the resource (prints `ADDED`), `replicas` prints `REPLICAS <json>` (the
RUNNING replica ids per deployment), `quit` (or EOF) shuts everything down.

    python -m tests.integration.two_node_graph --index DIR --model DIR --port N
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

RESOURCE = "generator_node"


def graph_config(index: str, model: str, port: int) -> dict[str, Any]:
    return {
        "models": {
            "generator": {
                "model": model,
                "served_model_name": "tiny-llama",
                "max_model_len": 1024,
                "max_num_seqs": 4,
                "kv_cache_memory_bytes": 64 * 1024 * 1024,
                "default_max_tokens": 8,
            }
        },
        "retrieval": {"index_dir": index, "top_k": 4, "top_n": 2},
        # Every step its own deployment, as clusters run: the generator alone
        # on the node that offers its resource.
        "layout": {"preset": "split"},
        "deployments": {
            # No CPU asked: nothing else can land on the generator's node,
            # which offers no CPU, only the custom resource.
            "generator": {"num_cpus": 0, "resources": {RESOURCE: 1}},
        },
        "resilience": {
            "request_timeout_s": 60,
            "generate_start_timeout_s": 8,
            "retry_after_s": 3,
        },
        "server": {"host": "127.0.0.1", "port": port},
    }


def _generator_node(cluster: Any) -> Any:
    return cluster.add_node(num_cpus=0, resources={RESOURCE: 1})


def _replica_ids() -> dict[str, list[str]]:
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"]["ragserve"]
    return {
        name: sorted(
            r["replica_id"]
            for r in dep["replicas"]
            if str(getattr(r["state"], "value", r["state"])) == "RUNNING"
        )
        for name, dep in app["deployments"].items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    opts = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from graph.config import RagServingArgs
    from graph.serve.builder import build_app

    args = RagServingArgs.load(graph_config(opts.index, opts.model, opts.port))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    try:
        node = _generator_node(cluster)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        # One proxy, on the head: both nodes share this machine's ports.
        serve.start(
            http_options={
                "host": "127.0.0.1",
                "port": opts.port,
                "location": "HeadOnly",
            }
        )
        serve.run(build_app(args), name="ragserve", route_prefix="/", blocking=False)
        print(f"READY http://127.0.0.1:{opts.port}", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "remove":
                cluster.remove_node(node)
                print("REMOVED", flush=True)
            elif command == "add":
                node = _generator_node(cluster)
                cluster.wait_for_nodes()
                print("ADDED", flush=True)
            elif command == "replicas":
                print(f"REPLICAS {json.dumps(_replica_ids())}", flush=True)
            elif command == "quit":
                break
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
