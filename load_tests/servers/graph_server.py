"""`python -m load_tests.servers.graph_server`: the graph on a private Ray.

Starts Ray on loopback with `graph.cli.server.start` (the first `--app`, served at
"/"), deploys any further `--app name=config.yaml` next to it at "/name",
polls replica counts into a timeline, and stops everything on SIGTERM/SIGINT,
when its parent exits, or after `--max-lifetime-s`, whichever comes first.

    python -m load_tests.servers.graph_server --app main=main.yaml \\
        --app nobatch=nobatch.yaml --timeline timeline.jsonl --ready-file ready
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("load_tests.servers.graph_server")


def _parse_app(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--app expects name=config.yaml, got {text!r}"
        )
    return name, Path(path)


def _watch(stop: threading.Event, parent: int, max_lifetime_s: float) -> None:
    deadline = time.monotonic() + max_lifetime_s
    while not stop.wait(1.0):
        if os.getppid() != parent:
            logger.warning("parent %d exited: stopping", parent)
            stop.set()
        elif time.monotonic() > deadline:
            logger.warning("max lifetime %.0f s reached: stopping", max_lifetime_s)
            stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.servers.graph_server")
    parser.add_argument("--app", type=_parse_app, action="append", required=True)
    parser.add_argument("--num-cpus", type=float, default=2.0)
    parser.add_argument("--timeline", type=Path, help="replica timeline JSONL")
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument(
        "--ready-file", type=Path, help="written with the URL once deployed"
    )
    parser.add_argument("--max-lifetime-s", type=float, default=1800.0)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="graph_server: %(message)s")

    from graph.cli import server
    from graph.config import RagServingArgs

    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    threading.Thread(
        target=_watch,
        args=(stop, os.getppid(), ns.max_lifetime_s),
        daemon=True,
    ).start()

    apps = [(name, RagServingArgs.load(path)) for name, path in ns.app]
    poller: tuple[threading.Thread, threading.Event] | None = None
    try:
        url = server.start(apps[0][1], num_cpus=ns.num_cpus)
        if ns.timeline:
            from load_tests.servers.replicas import ray_log_dir, start_poller

            poller = start_poller(ns.timeline, ns.poll_s, ray_log_dir())
        if len(apps) > 1:
            from ray import serve

            from graph.serve.builder import build_app

            # Deployed side by side without waiting: the caller polls
            # /<name>/ready, and the engines warm up in parallel.
            serve.run_many(
                [
                    serve.RunTarget(build_app(args), name=name, route_prefix=f"/{name}")
                    for name, args in apps[1:]
                ],
                wait_for_ingress_deployment_creation=False,
                wait_for_applications_running=False,
            )
        routes = {apps[0][0]: url, **{n: f"{url}/{n}" for n, _ in apps[1:]}}
        logger.info("serving %s", routes)
        if ns.ready_file:
            ns.ready_file.write_text(url + "\n", encoding="utf-8")
        stop.wait()
    finally:
        if poller is not None:
            poller[1].set()
            poller[0].join(timeout=5)
        logger.info("stopping Serve and Ray")
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
