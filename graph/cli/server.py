"""`ragserve serve`: a local Ray bound to loopback, the graph deployed, a clean stop.

Knows how to start and stop Ray and Serve around `build_app`; the graph itself
is in `graph.serve.builder`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from graph.config import RagServingArgs

logger = logging.getLogger("ragserve.server")
APP_NAME = "ragserve"
QUESTION = "How does ragserve batch requests?"


def _loopback_env(host: str) -> None:
    # Ray takes the eth0 address by default; this keeps node, GCS and raylet on
    # 127.0.0.1 when serving on loopback (must be set before Ray starts).
    if host in ("127.0.0.1", "localhost"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


# Ray Serve's throughput-optimized mode (Ray >= 2.55), read by every Ray
# process at start: about a third less CPU per request through the graph on
# the 2-core machine (load_tests/published/2026-12-01-quiet-*). Its direct
# ingress (each ingress replica's own HTTP port) stays off behind Serve's
# proxy; server.ingress=haproxy turns it on (graph.cli.haproxy).
THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


# Ray's control plane sized to one machine: Serve's controller ticks twice a
# second (not ten times), replicas and routers export request metrics once a
# second (not every 100 ms), the raylet reports its resources once a second.
# Autoscaling still decides on 10 s metric pushes; /metrics stays fresh to a
# second. Measured idle (tiny generator, retrieval in the ingress): 0.155 ->
# 0.108 CPU-s per s, the controller 0.042 -> 0.014 (docs/performance.md).
LEAN_ENV = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    "RAY_raylet_report_resources_period_milliseconds": "1000",
}


def serve_env(args: RagServingArgs) -> None:
    """Set Serve's performance mode and the lean control plane for a Ray this
    process starts (values already in the environment win)."""
    chosen: dict[str, str] = {}
    if args.server.throughput_optimized:
        chosen.update(THROUGHPUT_ENV)
    if args.server.lean_control_plane:
        chosen.update(LEAN_ENV)
    if args.server.ingress == "haproxy":
        from graph.cli.haproxy import haproxy_env

        forced = haproxy_env(args.server.host)
        # HAProxy needs direct ingress whatever the environment says.
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        chosen.update(forced)
    for name, value in chosen.items():
        os.environ.setdefault(name, value)


def start(
    args: RagServingArgs, address: str | None = None, num_cpus: float | None = None
) -> str:
    """Start (or join) Ray, deploy the graph, and return the base URL.

    Args:
        args: the config.
        address: an existing Ray cluster ("auto" or host:port); None starts a
            private local one.
        num_cpus: CPUs for a local Ray; None means all of this machine's.
    """
    _loopback_env(args.server.host)
    import ray
    from ray import serve

    from graph.serve.builder import build_app

    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # After this process imported Serve (above): the Ray processes
        # started below run the mode, while this driver keeps Serve's default
        # router thread, so plain-thread callers of a handle here (the soak,
        # tests) still work (the mode's router needs a running event loop).
        serve_env(args)
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    http_options: dict[str, Any] = {"host": args.server.host, "port": args.server.port}
    if args.server.request_timeout_s:
        http_options["request_timeout_s"] = args.server.request_timeout_s
    serve.start(http_options=http_options)
    if args.releases.serve:
        # As KubeRay does (import path + args), so that `ragserve traffic`
        # changes only the ingress's user_config and Serve applies it in place.
        from graph.serve.serve_config import deploy_declaratively
        from releases.registry import Registry

        data = args.model_dump(mode="json")
        data["releases"]["registry"] = str(Registry(args.releases.registry).root)
        deploy_declaratively(APP_NAME, data)
    else:
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{args.server.host}:{args.server.port}"


def stop() -> None:
    """Tear down Serve, then Ray (only what this process started)."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def run_until_signal(args: RagServingArgs, address: str | None = None) -> None:
    """`ragserve serve`: start, print how to call it, block until Ctrl-C/SIGTERM."""
    stop_event = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        print(
            f"\nragserve: {signal.Signals(signum).name} received, shutting down...",
            flush=True,
        )
        stop_event.set()

    def _install() -> None:
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)

    _install()
    started = time.perf_counter()
    try:
        url = start(args, address=address)
        # ray.init installs its own SIGTERM handler, which aborts the driver
        # without shutting Ray down; take the signals back.
        _install()
        if stop_event.is_set():
            return
        print(ready_banner(url, args, time.perf_counter() - started), flush=True)
        stop_event.wait()
    finally:
        stop()
        print("ragserve: stopped.", flush=True)


def ready_banner(url: str, args: RagServingArgs, elapsed_s: float) -> str:
    from graph.gate.tenancy import access_note

    model = args.models.generator.served_name()
    auth = (
        ' -H "Authorization: Bearer $RAGSERVE_API_KEY"' if args.server.api_keys else ""
    )
    key = "YOUR_API_KEY" if args.server.api_keys else "unused"
    return f"""
ragserve is ready at {url} ({elapsed_s:.0f} s)

  curl -N {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\
    -d '{{"model": "{model}", "stream": true,
         "messages": [{{"role": "user", "content": "{QUESTION}"}}]}}'

python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="{key}")
stream = client.chat.completions.create(
    model="{model}", stream=True,
    messages=[{{"role": "user", "content": "{QUESTION}"}}])
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
PY

Readiness: {url}/ready   Models: {url}/v1/models   Stop: Ctrl-C
{access_note(args)}
"""
