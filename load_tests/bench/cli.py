"""`python -m load_tests.bench`: start the servers, run the sections, report.

Knows the order of a bench (prepare, write the graph variants, start and wait
for every server, measure the model's own limit, prime, the sections, stop
everything) and its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from load_tests.bench import sections
from load_tests.bench.autoscale import autoscale_section
from load_tests.bench.layouts import LAYOUTS, PRESETS, run_layouts
from load_tests.bench.report import write_results
from load_tests.bench.runs import Bench, Runner, Target
from load_tests.bench.servers import (
    OFFLINE_ENV,
    RAY_WORKER_NICENESS,
    REPO,
    RESULTS,
    BenchError,
    Servers,
    free_port,
    log,
)
from load_tests.bench.setup import (
    Generator,
    graph_config,
    prepare_generator,
    prepare_index,
    write_yaml,
)
from load_tests.bench.vllm_client import vllm_client_section
from load_tests.otlp_sink import OTLPSink

SECTIONS = (
    "overhead",
    "batching",
    "throughput",
    "generation",
    "vllm_client",
    "tracing",
    "autoscale",
)
TRACED_SERVICE = "ragserve-bench-traced"
#: Every batched node off: the honest "batching off".
ALL_BATCHING_OFF = {
    node: {"enabled": False} for node in ("embedder", "retriever", "reranker")
}


def run_bench(ns: argparse.Namespace) -> int:
    out = Path(ns.out) if ns.out else RESULTS / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    servers = Servers(out / "logs")
    bench = Bench(ns, out, servers, Runner(out, ns.run_s, servers))
    sink = OTLPSink().start()
    wall = time.monotonic()
    log(f"results -> {out}")
    try:
        _run_sections(bench, sink)
    finally:
        servers.stop_all()
        sink.stop()
        bench.extra["wall_s"] = time.monotonic() - wall
        write_results(bench)
    log(f"done in {bench.extra['wall_s'] / 60:.1f} min: {out / 'results.md'}")
    return 0


def write_apps(
    bench: Bench, gen: Generator, index: str, port: int, sink: OTLPSink
) -> dict[str, Path]:
    """The graph variants this run needs, as YAML configs."""
    ns, cfg = bench.ns, bench.out / "configs"
    # Every variant in the layout under test (which steps share a deployment).
    layout = {"preset": ns.layout}
    main = graph_config(index, gen, port, layout=layout)
    apps = {"main": write_yaml(cfg / "main.yaml", main)}
    if {"batching", "overhead"} & set(ns.sections):
        nobatch = graph_config(
            index, gen, port, batching=ALL_BATCHING_OFF, layout=layout
        )
        apps["nobatch"] = write_yaml(cfg / "nobatch.yaml", nobatch)
    if "tracing" in ns.sections:
        telemetry = {
            "otlp_endpoint": sink.endpoint,
            "otlp_protocol": "http/protobuf",
            "sampling_ratio": 1.0,
            # Tells its spans apart from any an untraced app might send.
            "service_name": TRACED_SERVICE,
        }
        traced = graph_config(index, gen, port, telemetry=telemetry, layout=layout)
        apps["traced"] = write_yaml(cfg / "traced.yaml", traced)
    if "autoscale" in ns.sections:
        scaled = graph_config(index, gen, port, layout=layout)
        scaled["deployments"]["embedder"] = {
            "num_cpus": 0.1,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 3,
                "target_ongoing_requests": 2,
                "upscale_delay_s": 2,
                "downscale_delay_s": 5,
            },
        }
        apps["autoscale"] = write_yaml(cfg / "autoscale.yaml", scaled)
    return apps


def start_servers(
    bench: Bench, gen: Generator, apps: dict[str, Path], ports: dict[str, int]
) -> sections.Targets:
    """Start the graph, the one-process server and vLLM's own as needed."""
    ns, servers = bench.ns, bench.servers
    base = f"http://127.0.0.1:{ports['graph']}"
    lifetime = f"{ns.budget_s + 300:g}"
    graph_cmd = [
        *(sys.executable, "-m", "load_tests.servers.graph_server"),
        *("--num-cpus", "2", "--max-lifetime-s", lifetime),
        *("--timeline", str(bench.out / "timeline.jsonl")),
    ]
    for name, path in apps.items():
        graph_cmd += ["--app", f"{name}={path}"]
    ready = [f"{base}/ready"] + [f"{base}/{n}/ready" for n in apps if n != "main"]
    # For vLLM's own spans in the traced app; the graph's tracer reads
    # `telemetry.otlp_protocol` from its config.
    env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    servers.start("graph", graph_cmd, ready, env=env)
    local_url = f"http://127.0.0.1:{ports['local']}"
    if {"overhead", "throughput"} & set(ns.sections):
        local_cmd = [
            *(sys.executable, "-m", "load_tests.servers.local_server"),
            *("--config", str(apps["main"]), "--port", str(ports["local"])),
            *("--max-lifetime-s", lifetime),
        ]
        servers.start(
            "local", local_cmd, [f"{local_url}/ready"], nice=RAY_WORKER_NICENESS
        )
    vllm_url = f"http://127.0.0.1:{ports['vllm']}"
    if {"generation", "vllm_client"} & set(ns.sections):
        servers.start(
            "vllm",
            vllm_command(gen, ports["vllm"]),
            [f"{vllm_url}/v1/models"],
            env=gen.env,
            nice=RAY_WORKER_NICENESS,
        )
    servers.wait_ready(list(servers.running), ns.ready_timeout_s)
    bench.extra["ready_s"] = {n: s.ready_s for n, s in servers.running.items()}

    def in_graph(key: str, label: str, app: str, url: str) -> Target:
        others = frozenset(_serve_app(n) for n in apps if n != app)
        return Target(key, label, url, server="graph", other_apps=others)

    return sections.Targets(
        graph=in_graph("graph", "graph (Ray Serve)", "main", base),
        nobatch=in_graph(
            "nobatch", "graph, batching off", "nobatch", f"{base}/nobatch"
        ),
        traced=in_graph("traced", "graph, tracing on", "traced", f"{base}/traced"),
        local=Target(
            "local", "one process (FastAPI+uvicorn)", local_url, server="local"
        ),
        vllm=Target(
            "vllm", "vLLM OpenAI server", vllm_url, gen.served_name, server="vllm"
        ),
    )


def _serve_app(name: str) -> str:
    # The first app is `graph.cli.server.start`'s own (named "ragserve").
    return "ragserve" if name == "main" else name


def vllm_command(gen: Generator, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", gen.path, "--served-model-name", gen.served_name),
        *("--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"),
        *("--max-num-seqs", "8", "--kv-cache-memory-bytes", str(gen.kv_cache_bytes)),
        *("--host", "127.0.0.1", "--port", str(port), "--disable-uvicorn-access-log"),
    ]


def measure_model_limit(bench: Bench, config: Path) -> None:
    """P2's reference: the embedder and reranker alone at batch 32, one
    process, the node's threads (before any server runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "load_tests.servers.model_limit", str(config)],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        bench.notes["model_limit"] = f"failed: {proc.stderr.strip()[-300:]}"
        return
    bench.extra["model_limit"] = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"model limit: {bench.extra['model_limit']}")


def _run_sections(bench: Bench, sink: OTLPSink) -> None:
    ns = bench.ns
    gen = prepare_generator(ns)
    index = prepare_index(ns, bench.out)
    bench.extra["generator"] = {"path": gen.path, "served_name": gen.served_name}
    bench.extra["index"] = index
    ports = {"graph": free_port(), "local": free_port(), "vllm": free_port()}
    apps = write_apps(bench, gen, index, ports["graph"], sink)
    if "batching" in ns.sections:
        measure_model_limit(bench, apps["main"])
    t = start_servers(bench, gen, apps, ports)
    available = {"graph", *apps, *bench.servers.running}
    base = t.graph.url
    sections.prime(
        bench,
        [
            x
            for x in (t.graph, t.nobatch, t.traced, t.local, t.vllm)
            if x.key in available
        ],
        f"{base}/autoscale" if "autoscale" in apps else None,
    )
    # What each server burns doing nothing (Ray's control loops, the apps
    # side by side in it): read P6 rows against it.
    bench.extra["idle_cpu_s_per_s"] = bench.servers.idle_cpu()
    log(f"idle CPU-s per s: {bench.extra['idle_cpu_s_per_s']}")
    per_run = ns.run_s + 2.5
    each = (ns.rounds + 1) * per_run
    bench.section("overhead", 2 * 3 * each, lambda: sections.overhead(bench, t))
    bench.section("batching", 3 * 2 * each, lambda: sections.batching(bench, t))
    bench.section("throughput", 2 * each, lambda: sections.throughput(bench, t))
    bench.section("generation", 2 * each, lambda: sections.generation(bench, t))
    bench.section(
        "vllm_client",
        4 * ns.client_prompts * 2,
        lambda: vllm_client_section(bench, t.vllm, t.graph, gen.path),
    )
    bench.servers.stop("vllm")
    bench.servers.stop("local")
    bench.section("tracing", 2 * each + 6, lambda: sections.tracing(bench, t, sink))
    bench.section(
        "autoscale",
        ns.ramp_step_s * len(ns.ramp.split(",")) + ns.scale_down_wait_s + 10,
        lambda: autoscale_section(
            bench, bench.out / "timeline.jsonl", f"{base}/autoscale"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.bench",
        description="Side-by-side load comparisons of the ragserve graph.",
    )
    p.add_argument(
        "--index",
        default="~/.cache/ragserve/index/docs",
        help="FAISS index folder (built from docs/ when missing)",
    )
    p.add_argument(
        "--generator",
        default="tiny",
        help="'tiny' (the test Llama, fast), 'smollm2' (the default model, slow "
        "on CPU) or a model folder",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        type=lambda s: [x for x in s.split(",") if x],
        help=f"comma list out of {','.join(SECTIONS)}",
    )
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds per comparison")
    p.add_argument("--run-s", type=float, default=6.0, help="seconds per measured run")
    p.add_argument("--warmup-s", type=float, default=2.0, help="seconds per warm-up")
    p.add_argument("--gen-max-tokens", type=int, default=64)
    p.add_argument(
        "--client-prompts",
        type=int,
        default=48,
        help="vllm_client: prompts per server for vLLM's benchmark client",
    )
    p.add_argument(
        "--ramp",
        default="2,4,8,8,8,8,8,8,0,0,0",
        help="autoscale: req/s per step (the trailing zeros show the scale-down)",
    )
    p.add_argument("--ramp-step-s", type=float, default=7.0)
    p.add_argument(
        "--ramp-embed-inputs", type=int, default=4, help="texts per embeddings request"
    )
    p.add_argument("--scale-down-wait-s", type=float, default=40.0)
    p.add_argument(
        "--budget-s",
        type=float,
        default=19 * 60,
        help="skip sections that would not fit in this many seconds overall",
    )
    p.add_argument("--ready-timeout-s", type=float, default=600.0)
    p.add_argument(
        "--layouts",
        default=",".join(LAYOUTS),
        type=lambda s: [x for x in s.split(",") if x],
        help="graph layouts (layout.preset) to bench one after the other, each "
        "against the same baselines, reported side by side",
    )
    p.add_argument("--out", help="results folder (default load_tests/results/<time>)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    unknown = sorted(set(ns.sections) - set(SECTIONS))
    if unknown:
        print(f"bench: error: unknown section(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    odd = sorted(set(ns.layouts) - set(PRESETS))
    if odd or not ns.layouts:
        print(
            f"bench: error: --layouts takes {', '.join(PRESETS)} (got "
            f"{', '.join(odd) or 'none'})",
            file=sys.stderr,
        )
        return 2

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        return run_layouts(ns, run_bench)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
