"""`make bench` / `python -m load_tests.bench`: side-by-side comparisons, one run.

Starts every server it measures as a subprocess it owns (the graph on a private
Ray with four variants side by side, the same pipeline in one process, vLLM's
own OpenAI server), waits for them, drives each comparison as interleaved
short runs (A, B, A, B, ...) of the load generator in its own process, and
writes `load_tests/results/<timestamp>/` with `results.md`, `results.json`,
PNGs, every run's report and every server's log. Servers are always stopped,
by PID, on the way out.

Each comparison is a ratio B/A per round, so slow drift of the machine (other
jobs, thermal) hits both sides of a round alike; the table gives the median
ratio and its spread (min-max over rounds).

This driver imports no Ray (the graph runs in `load_tests.graph_server`) and
none of the graph: it writes configs as plain YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from load_tests.otlp_sink import OTLPSink
from load_tests.replicas import read_timeline

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "load_tests" / "results"
SECTIONS = ("overhead", "batching", "throughput", "generation", "tracing", "autoscale")
#: Ray starts its workers at niceness 15; the other servers get the same, so
#: the load generator and other jobs compete alike with every server measured.
RAY_WORKER_NICENESS = 15
TRACED_SERVICE = "ragserve-bench-traced"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "NO_PROXY": "127.0.0.1,localhost,::1",
    "no_proxy": "127.0.0.1,localhost,::1",
}


class BenchError(Exception):
    """The bench cannot go on; the message says why."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- servers --------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_urls: list[str]
    started: float = field(default_factory=time.monotonic)
    ready_s: float | None = None


class Servers:
    """Subprocesses this bench started; `stop_all` ends them by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, Server] = {}

    def start(
        self,
        name: str,
        cmd: list[str],
        ready_urls: list[str],
        env: dict[str, str] | None = None,
        nice: int = 0,
    ) -> Server:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        prefix = ["nice", "-n", str(nice)] if nice else []
        with log_path.open("wb") as out:
            # Own session: a stuck server's whole process group (its engine
            # children) can be ended without touching anything else.
            process = subprocess.Popen(
                prefix + cmd,
                cwd=REPO,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(name, process, log_path, ready_urls)
        self.running[name] = server
        log(f"started {name} (pid {process.pid}); log {log_path}")
        return server

    def wait_ready(self, names: Sequence[str], timeout_s: float) -> None:
        """Block until every URL of every named server answers 200."""
        deadline = time.monotonic() + timeout_s
        pending = {n: list(self.running[n].ready_urls) for n in names}
        with httpx.Client(timeout=10, trust_env=False) as client:
            while pending:
                for name in list(pending):
                    server = self.running[name]
                    code = server.process.poll()
                    if code is not None:
                        raise BenchError(
                            f"{name} exited with {code} before it was ready:\n"
                            + _tail(server.log_path)
                        )
                    urls = pending[name]
                    while urls and _ok(client, urls[0]):
                        urls.pop(0)
                    if not urls:
                        server.ready_s = time.monotonic() - server.started
                        log(f"{name} ready in {server.ready_s:.0f} s")
                        del pending[name]
                if pending and time.monotonic() > deadline:
                    raise BenchError(
                        f"not ready after {timeout_s:.0f} s: {', '.join(pending)}"
                    )
                time.sleep(2)

    def stop(self, name: str, grace_s: float = 60.0) -> None:
        server = self.running.pop(name, None)
        if server is None:
            return
        pid = server.process.pid
        if server.process.poll() is None:
            log(f"stopping {name} (pid {pid})")
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log(f"{name} ignored SIGTERM for {grace_s:.0f} s: killing it")
        # The server led its own process group; whatever is left in it (a
        # vLLM engine process whose parent died, a Ray worker) was started by
        # us and must not outlive the bench.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            log(f"{name}: processes left in its group {pid}; sending {sig.name}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            time.sleep(3)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.running):
            try:
                self.stop(name)
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {name}: {exc}")


def _ok(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- configs --------------------------------------------------------------------


@dataclass(frozen=True)
class Generator:
    path: str
    served_name: str
    kv_cache_bytes: int
    env: dict[str, str]


def graph_config(
    index_dir: str, gen: Generator, port: int, **overrides: Any
) -> dict[str, Any]:
    """A graph that fits 2 CPUs four times over (fractional replicas)."""
    config: dict[str, Any] = {
        "models": {
            "generator": {
                "model": gen.path,
                "served_model_name": gen.served_name,
                "max_model_len": 2048,
                "max_num_seqs": 8,
                "kv_cache_memory_bytes": gen.kv_cache_bytes,
                "default_max_tokens": 16,
                "env": gen.env,
            }
        },
        # 1500 characters of context keep the prompt well inside 2048 tokens.
        "retrieval": {
            "index_dir": index_dir,
            "top_k": 8,
            "top_n": 3,
            "max_context_chars": 1500,
        },
        # One replica each, fixed: a comparison must not be decided by one
        # side autoscaling (the node defaults autoscale up to 2).
        "deployments": {
            "ingress": {"num_cpus": 0.05, "num_replicas": 1},
            "embedder": {"num_cpus": 0.1, "num_replicas": 1},
            "retriever": {"num_cpus": 0.05, "num_replicas": 1},
            "reranker": {"num_cpus": 0.05, "num_replicas": 1},
            "generator": {"num_cpus": 0.15, "num_replicas": 1},
        },
        "server": {"host": "127.0.0.1", "port": port},
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --- runs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    url: str
    model: str | None = None  # vLLM's server wants the model field


@dataclass(frozen=True)
class Workload:
    name: str
    flags: tuple[str, ...]


@dataclass
class Runner:
    """Runs the load generator as a subprocess and keeps every report."""

    out: Path
    run_s: float
    drain_s: float = 20.0
    runs: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self, section: str, target: Target, workload: Workload, tag: str, seconds: float
    ) -> dict[str, Any]:
        folder = self.out / "runs" / section / f"{workload.name}-{target.key}-{tag}"
        cmd = [
            sys.executable,
            "-m",
            "load_tests",
            "run",
            "--url",
            target.url,
            "--duration",
            f"{seconds:g}",
            "--max-requests",
            "20000",
            "--drain-s",
            f"{self.drain_s:g}",
            "--timeout",
            "60",
            "--no-plot",
            "-q",
            "--out",
            str(folder),
            *workload.flags,
        ]
        if target.model:
            cmd += ["--model", target.model]
        load_before = os.getloadavg()[0]
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=seconds + self.drain_s + 90,
        )
        if proc.returncode != 0:
            raise BenchError(
                f"load run {folder.name} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-500:]}"
            )
        report: dict[str, Any] = json.loads((folder / "report.json").read_text())
        report["_meta"] = {
            "section": section,
            "target": target.key,
            "workload": workload.name,
            "tag": tag,
            "loadavg_1m": [load_before, os.getloadavg()[0]],
        }
        self.runs.append(report["_meta"] | {"summary": _brief(report)})
        errors = report["requests"]["failed"]
        log(
            f"  {section}/{workload.name} {target.label} [{tag}]: "
            f"{report['throughput']['requests_per_s']:.2f} req/s, "
            f"p50 {_fmt(report['latency']['e2e']['p50_ms'])} ms"
            + (f", {errors} errors {report['errors']['by_kind']}" if errors else "")
        )
        return report

    def interleave(
        self,
        section: str,
        targets: Sequence[Target],
        workload: Workload,
        rounds: int,
        warmup_s: float,
    ) -> dict[str, list[dict[str, Any]]]:
        """Warm each target up, then rounds of A, B, (C...) back to back."""
        for target in targets:
            self.run(section, target, workload, "warmup", warmup_s)
        out: dict[str, list[dict[str, Any]]] = {t.key: [] for t in targets}
        for i in range(rounds):
            for target in targets:
                out[target.key].append(
                    self.run(section, target, workload, f"r{i + 1}", self.run_s)
                )
        return out


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    lat = report["latency"]
    return {
        "requests": report["requests"],
        "rps": report["throughput"]["requests_per_s"],
        "tokens_per_s": report["throughput"]["tokens_per_s"],
        "e2e_p50_ms": lat["e2e"]["p50_ms"],
        "e2e_p95_ms": lat["e2e"]["p95_ms"],
        "ttft_p50_ms": lat["ttft"]["p50_ms"],
        "itl_p50_ms": lat["itl"]["p50_ms"],
        "errors": report["errors"]["by_kind"],
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- metrics and rows -----------------------------------------------------------

Metric = Callable[[dict[str, Any]], float | None]

METRICS: dict[str, tuple[str, Metric, int]] = {
    "e2e_p50": ("p50 latency (ms)", lambda r: r["latency"]["e2e"]["p50_ms"], 1),
    "e2e_p95": ("p95 latency (ms)", lambda r: r["latency"]["e2e"]["p95_ms"], 1),
    "rps": ("requests/s", lambda r: r["throughput"]["requests_per_s"], 2),
    "tps": ("tokens/s", lambda r: r["throughput"]["tokens_per_s"], 1),
    "ttft_p50": ("TTFT p50 (ms)", lambda r: r["latency"]["ttft"]["p50_ms"], 1),
    "itl_p50": ("ITL p50 (ms)", lambda r: r["latency"]["itl"]["p50_ms"], 1),
    "itl_p95": ("ITL p95 (ms)", lambda r: r["latency"]["itl"]["p95_ms"], 1),
}


def compare(
    section: str,
    workload: str,
    runs: dict[str, list[dict[str, Any]]],
    a: Target,
    b: Target,
    metric: str,
    with_difference: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """One table row: B/A per round, its median and spread."""
    label, get, digits = METRICS[metric]
    pairs = [
        (get(ra), get(rb))
        for ra, rb in zip(runs[a.key], runs[b.key], strict=True)
        if ra["requests"]["failed"] == 0 and rb["requests"]["failed"] == 0
    ]
    values = [(x, y) for x, y in pairs if x and y is not None]
    ratios = [y / x for x, y in values]
    diffs = [y - x for x, y in values]
    row: dict[str, Any] = {
        "section": section,
        "workload": workload,
        "metric": label,
        "a": a.label,
        "b": b.label,
        "a_median": statistics.median([x for x, _ in values]) if values else None,
        "b_median": statistics.median([y for _, y in values]) if values else None,
        "digits": digits,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios) if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "rounds": len(ratios),
        "note": note,
    }
    if with_difference and diffs:
        row["diff_median"] = statistics.median(diffs)
        row["diff_min"], row["diff_max"] = min(diffs), max(diffs)
    failed = len(pairs) < len(runs[a.key])
    if failed or len(values) < len(pairs):
        skipped = len(runs[a.key]) - len(values)
        row["note"] = (
            note + "; " if note else ""
        ) + f"{skipped} round(s) left out (errors or nothing measured)"
    return row


# --- the bench ------------------------------------------------------------------


@dataclass
class Bench:
    ns: argparse.Namespace
    out: Path
    servers: Servers
    runner: Runner
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def budget_left(self) -> float:
        return self.ns.budget_s - (time.monotonic() - self.started)

    def section(self, name: str, estimate_s: float, fn: Callable[[], None]) -> None:
        if name not in self.ns.sections:
            return
        if self.budget_left() < estimate_s:
            self.notes[name] = (
                f"skipped: {self.budget_left():.0f} s of the time budget left, "
                f"needs ~{estimate_s:.0f} s (raise --budget-s or shorten --run-s)"
            )
            log(f"{name}: {self.notes[name]}")
            return
        log(f"== {name}")
        began = time.monotonic()
        try:
            fn()
        except BenchError as exc:
            self.notes[name] = f"failed: {exc}"
            log(f"{name} failed: {exc}")
        self.extra.setdefault("section_s", {})[name] = time.monotonic() - began


def prepare_generator(ns: argparse.Namespace) -> Generator:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if ns.generator == "tiny":
        cache = Path(
            os.environ.get("RAGSERVE_TEST_CACHE", "~/.cache/ragserve/test")
        ).expanduser()
        code = (
            "import sys; from pathlib import Path; "
            "from tests.factories import build_tiny_llama; "
            "print(build_tiny_llama(Path(sys.argv[1])))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(cache / "tiny-llama")],
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise BenchError(f"building the tiny Llama failed: {proc.stderr[-500:]}")
        return Generator(
            proc.stdout.strip().splitlines()[-1], "tiny-llama", 64 << 20, env
        )
    if ns.generator == "smollm2":
        proc = subprocess.run(
            [sys.executable, "-m", "graph.cli", "models", "prepare", "-q"],
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise BenchError(f"ragserve models prepare failed: {proc.stderr[-500:]}")
        path = proc.stdout.strip().splitlines()[-1]
        return Generator(path, "SmolLM2-135M-Instruct", 256 << 20, env)
    path = str(Path(ns.generator).expanduser())
    return Generator(path, Path(path).name, 256 << 20, env)


def prepare_index(ns: argparse.Namespace, out: Path) -> str:
    index = Path(ns.index).expanduser()
    if (index / "manifest.json").is_file():
        return str(index)
    built = out / "index"
    log(f"no index at {index}: building one from docs/ into {built}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "graph.cli",
            "index",
            "build",
            "--docs",
            str(REPO / "docs"),
            "--out",
            str(built),
            "-q",
        ],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise BenchError(f"index build failed: {proc.stderr[-500:]}")
    return str(built)


def run_bench(ns: argparse.Namespace) -> int:
    out = Path(ns.out) if ns.out else RESULTS / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    servers = Servers(out / "logs")
    bench = Bench(ns, out, servers, Runner(out, ns.run_s))
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


def _run_sections(bench: Bench, sink: OTLPSink) -> None:
    ns, out, servers = bench.ns, bench.out, bench.servers
    gen = prepare_generator(ns)
    index = prepare_index(ns, out)
    bench.extra["generator"] = {"path": gen.path, "served_name": gen.served_name}
    bench.extra["index"] = index
    port, local_port, vllm_port = free_port(), free_port(), free_port()
    cfg = out / "configs"
    main = write_yaml(cfg / "main.yaml", graph_config(index, gen, port))
    apps = {"main": main}
    if "batching" in ns.sections or "overhead" in ns.sections:
        apps["nobatch"] = write_yaml(
            cfg / "nobatch.yaml",
            graph_config(
                index,
                gen,
                port,
                batching={
                    "embedder": {"enabled": False},
                    "reranker": {"enabled": False},
                },
            ),
        )
    if "tracing" in ns.sections:
        traced_cfg = graph_config(
            index,
            gen,
            port,
            telemetry={
                "otlp_endpoint": sink.endpoint,
                "otlp_protocol": "http/protobuf",
                "sampling_ratio": 1.0,
                # Tells its spans apart from any an untraced app might send.
                "service_name": TRACED_SERVICE,
            },
        )
        apps["traced"] = write_yaml(cfg / "traced.yaml", traced_cfg)
    if "autoscale" in ns.sections:
        scaled = graph_config(index, gen, port)
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

    base = f"http://127.0.0.1:{port}"
    timeline = out / "timeline.jsonl"
    graph_cmd = [sys.executable, "-m", "load_tests.graph_server", "--num-cpus", "2"]
    for name, path in apps.items():
        graph_cmd += ["--app", f"{name}={path}"]
    graph_cmd += [
        "--timeline",
        str(timeline),
        "--max-lifetime-s",
        f"{ns.budget_s + 300:g}",
    ]
    ready = [f"{base}/ready"] + [f"{base}/{n}/ready" for n in apps if n != "main"]
    servers.start(
        "graph",
        graph_cmd,
        ready,
        # For vLLM's own spans in the traced app; the graph's tracer reads
        # `telemetry.otlp_protocol` from its config.
        env={"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
    )
    needs_local = {"overhead", "throughput"} & set(ns.sections)
    if needs_local:
        servers.start(
            "local",
            [
                sys.executable,
                "-m",
                "load_tests.local_server",
                "--config",
                str(main),
                "--port",
                str(local_port),
                "--max-lifetime-s",
                f"{ns.budget_s + 300:g}",
            ],
            [f"http://127.0.0.1:{local_port}/ready"],
            nice=RAY_WORKER_NICENESS,
        )
    if "generation" in ns.sections:
        servers.start(
            "vllm",
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                gen.path,
                "--served-model-name",
                gen.served_name,
                "--dtype",
                "float32",
                "--enforce-eager",
                "--max-model-len",
                "2048",
                "--max-num-seqs",
                "8",
                "--kv-cache-memory-bytes",
                str(gen.kv_cache_bytes),
                "--host",
                "127.0.0.1",
                "--port",
                str(vllm_port),
                "--disable-uvicorn-access-log",
            ],
            [f"http://127.0.0.1:{vllm_port}/v1/models"],
            env=gen.env,
            nice=RAY_WORKER_NICENESS,
        )
    servers.wait_ready(list(servers.running), ns.ready_timeout_s)
    bench.extra["ready_s"] = {n: s.ready_s for n, s in servers.running.items()}

    graph = Target("graph", "graph (Ray Serve)", base)
    nobatch = Target("nobatch", "graph, batching off", f"{base}/nobatch")
    local = Target(
        "local", "one process (FastAPI+uvicorn)", f"http://127.0.0.1:{local_port}"
    )
    vllm = Target(
        "vllm", "vLLM OpenAI server", f"http://127.0.0.1:{vllm_port}", gen.served_name
    )
    traced = Target("traced", "graph, tracing on", f"{base}/traced")
    per_run = ns.run_s + 2.5
    rounds, warm = ns.rounds, ns.warmup_s
    available = {"graph", *apps, *servers.running}
    prime(
        bench,
        [t for t in (graph, nobatch, traced, local, vllm) if t.key in available],
        f"{base}/autoscale" if "autoscale" in apps else None,
    )

    def overhead() -> None:
        for wl in (
            Workload(
                "retrieve-c1",
                ("--scenario=retrieve", "--mode=closed", "--concurrency=1"),
            ),
            Workload(
                "rag-chat-c1",
                (
                    "--scenario=chat",
                    "--mode=closed",
                    "--concurrency=1",
                    "--max-tokens=4",
                ),
            ),
        ):
            runs = bench.runner.interleave(
                "overhead", [local, graph, nobatch], wl, rounds, warm
            )
            for b in (graph, nobatch):
                bench.rows.append(
                    compare("overhead", wl.name, runs, local, b, "e2e_p50", True)
                )

    def batching() -> None:
        for wl in (
            Workload(
                "embeddings-c32",
                ("--scenario=embeddings", "--mode=closed", "--concurrency=32"),
            ),
            Workload(
                "rerank-c32",
                ("--scenario=rerank", "--mode=closed", "--concurrency=32"),
            ),
        ):
            runs = bench.runner.interleave(
                "batching", [nobatch, graph], wl, rounds, warm
            )
            for metric in ("rps", "e2e_p95"):
                bench.rows.append(
                    compare("batching", wl.name, runs, nobatch, graph, metric)
                )

    def throughput() -> None:
        wl = Workload(
            "rag-chat-c8",
            ("--scenario=chat", "--mode=closed", "--concurrency=8", "--max-tokens=16"),
        )
        runs = bench.runner.interleave("throughput", [local, graph], wl, rounds, warm)
        for metric in ("rps", "e2e_p95"):
            bench.rows.append(
                compare("throughput", wl.name, runs, local, graph, metric)
            )

    def generation() -> None:
        wl = Workload(
            f"stream-c4-{ns.gen_max_tokens}tok",
            (
                "--scenario=chat_stream",
                "--mode=closed",
                "--concurrency=4",
                f"--max-tokens={ns.gen_max_tokens}",
                "--rag=off",
            ),
        )
        # vLLM's server rejects ragserve's `rag` extension: its runs send none.
        vllm_wl = Workload(wl.name, tuple(f for f in wl.flags if f != "--rag=off"))
        for target in (vllm, graph):
            bench.runner.run(
                "generation", target, vllm_wl if target is vllm else wl, "warmup", warm
            )
        runs: dict[str, list[dict[str, Any]]] = {"vllm": [], "graph": []}
        for i in range(rounds):
            runs["vllm"].append(
                bench.runner.run("generation", vllm, vllm_wl, f"r{i + 1}", ns.run_s)
            )
            runs["graph"].append(
                bench.runner.run("generation", graph, wl, f"r{i + 1}", ns.run_s)
            )
        for metric in ("tps", "ttft_p50", "itl_p50", "itl_p95"):
            bench.rows.append(compare("generation", wl.name, runs, vllm, graph, metric))

    def tracing() -> None:
        wl = Workload(
            "rag-chat-c4",
            ("--scenario=chat", "--mode=closed", "--concurrency=4", "--max-tokens=4"),
        )
        for target in (graph, traced):
            bench.runner.run("tracing", target, wl, "warmup", warm)
        runs: dict[str, list[dict[str, Any]]] = {"graph": [], "traced": []}
        for i in range(rounds):
            for target in (graph, traced):
                runs[target.key].append(
                    bench.runner.run("tracing", target, wl, f"r{i + 1}", ns.run_s)
                )
        time.sleep(6)  # batch span processors export every ~5 s
        snap = sink.snapshot()
        bench.extra["otlp_sink"] = snap
        note = tracing_note(snap)
        bench.notes["tracing"] = note
        for metric in ("e2e_p50", "e2e_p95", "rps"):
            bench.rows.append(
                compare("tracing", wl.name, runs, graph, traced, metric, note=note)
            )

    def autoscale() -> None:
        autoscale_section(bench, timeline, f"{base}/autoscale")

    bench.section("overhead", 2 * 3 * (rounds + 1) * per_run, overhead)
    bench.section("batching", 2 * 2 * (rounds + 1) * per_run, batching)
    bench.section("throughput", 2 * (rounds + 1) * per_run, throughput)
    bench.section("generation", 2 * (rounds + 1) * per_run, generation)
    servers.stop("vllm")
    servers.stop("local")
    bench.section("tracing", 2 * (rounds + 1) * per_run + 6, tracing)
    bench.section(
        "autoscale",
        ns.ramp_step_s * len(ns.ramp.split(",")) + ns.scale_down_wait_s + 10,
        autoscale,
    )


def prime(bench: Bench, targets: list[Target], autoscale: str | None) -> None:
    """A few seconds of every request kind on every server before any run.

    A fresh replica pays one-off costs on its first real batches (kernel
    choices for new shapes, connection pools, an exporter's first flush);
    without this, whichever variant a section uses first is charged them.
    """
    log("== priming every server")
    mix = ("--scenario=mix", "--mix=chat=1,embeddings=1,rerank=1,retrieve=1")
    for target in targets:
        if target.key == "vllm":
            flags: tuple[str, ...] = ("--scenario=chat_stream",)
        else:
            flags = mix
        wl = Workload("prime", (*flags, "--mode=closed", "--concurrency=2"))
        bench.runner.run("prime", target, wl, "prime", 3)
    if autoscale:
        # One client: enough to warm it, too little to make it scale.
        scaled = Target("autoscale", "graph, autoscaling embedder", autoscale)
        wl = Workload("prime", (*mix, "--mode=closed", "--concurrency=1"))
        bench.runner.run("prime", scaled, wl, "prime", 3)


def tracing_note(snap: dict[str, Any]) -> str:
    """What the OTLP sink's counts say about the graph's tracing."""
    names: dict[str, int] = snap["names"]
    ours = {n: c for n, c in names.items() if n.startswith("rag.")}
    # Apps without an endpoint must send nothing; their service is "ragserve".
    strays = snap.get("services", {}).get("ragserve", 0)
    stray = f"; {strays} spans came from the tracing-off apps" if strays else ""
    if ours:
        listed = ", ".join(f"{n} x{c}" for n, c in sorted(ours.items()))
        return f"tracing on: the sink received {snap['spans']} spans ({listed}){stray}"
    if snap["spans"]:
        listed = ", ".join(sorted(names))
        return (
            "tracing not yet implemented in the graph: the sink received only "
            f"{snap['spans']} spans from vLLM's own tracer ({listed}), no rag.* spans"
        )
    if snap["requests"]:
        return (
            f"tracing not yet implemented: {snap['requests']} exports reached the "
            "sink but none decoded as OTLP/protobuf"
        )
    return "tracing not yet implemented: no spans reached the sink"


def autoscale_section(bench: Bench, timeline: Path, url: str) -> None:
    ns = bench.ns
    from load_tests.plot import plot_report

    folder = bench.out / "runs" / "autoscale" / "ramp"
    steps = ns.ramp.split(",")
    duration = ns.ramp_step_s * len(steps)
    cmd = [
        sys.executable,
        "-m",
        "load_tests",
        "run",
        "--url",
        url,
        "--scenario=embeddings",
        f"--embed-inputs={ns.ramp_embed_inputs}",
        f"--rate={ns.ramp}",
        "--arrival=poisson",
        f"--step-s={ns.ramp_step_s:g}",
        f"--duration={duration:g}",
        "--max-requests=20000",
        "--timeout=30",
        "--drain-s=15",
        "--no-plot",
        "-q",
        "--out",
        str(folder),
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if proc.returncode != 0:
        raise BenchError(f"ramp run failed: {proc.stderr.strip()[-500:]}")
    report = json.loads((folder / "report.json").read_text())
    # Wait for the scale-down to show (or give up), then plot with it.
    deadline = time.monotonic() + ns.scale_down_wait_s
    end = report["started_at"] + report["elapsed_s"]
    while time.monotonic() < deadline:
        samples = _embedder_samples(read_timeline(timeline, end))
        if (
            samples
            and samples[-1]["running"] <= 1
            and samples[-1].get("target") in (1, None)
        ):
            break
        time.sleep(2)
    entries = [
        e
        for e in read_timeline(timeline, report["started_at"] - 2, time.time())
        if e.get("app") == "autoscale" and e.get("deployment") == "embedder"
    ]
    report["timeline"] = entries
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    png = plot_report(
        report,
        bench.out / "autoscale.png",
        title="embedder autoscaling under a rate ramp (min 1, max 3, target 2)",
    )
    bench.extra["autoscale"] = summarize_scaling(report, entries) | {"plot": png.name}
    log(f"  autoscale: {bench.extra['autoscale']}")


def _embedder_samples(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("app") == "autoscale"
        and e.get("deployment") == "embedder"
        and "event" not in e
    ]


def summarize_scaling(
    report: dict[str, Any], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Peak replicas and when scaling happened, relative to the run's start."""
    t0 = report["started_at"]
    samples = [e for e in entries if "event" not in e]
    events = [e for e in entries if e.get("event") == "scale"]
    load_end = t0 + sum(s["duration_s"] for s in report["stages"] if s["offered"] > 0)
    peak = max((s["running"] for s in samples), default=0)
    first_peak = next((s["t"] - t0 for s in samples if s["running"] == peak), None)
    # Back down: the first sample after the load ended and after the peak
    # showed up with one replica running again.
    after = max(load_end, t0 + (first_peak or 0.0))
    back = next(
        (s["t"] - t0 for s in samples if s["t"] > after and s["running"] <= 1),
        None,
    )
    return {
        "peak_running_replicas": peak,
        "peak_target_replicas": max((s.get("target") or 0 for s in samples), default=0),
        "peak_reached_s": first_peak,
        "load_ended_s": load_end - t0,
        "back_to_one_s": back,
        "decisions": [
            {
                "t_s": round(e["t"] - t0, 1),
                "from": e["from"],
                "to": e["to"],
                "ongoing_requests": e["ongoing_requests"],
            }
            for e in events
        ],
        "stages": [
            {
                "offered_rps": s["offered"],
                "achieved_rps": round(s["throughput"]["requests_per_s"], 2),
                "p50_ms": s["latency"]["e2e"]["p50_ms"],
                "p95_ms": s["latency"]["e2e"]["p95_ms"],
            }
            for s in report["stages"]
        ],
        "errors": report["errors"]["by_kind"],
    }


# --- output ---------------------------------------------------------------------


def check_fixed_replicas(bench: Bench) -> None:
    """Note any compared deployment whose replica count moved during the run."""
    moved: dict[str, int] = {}
    for entry in read_timeline(bench.out / "timeline.jsonl"):
        if "event" in entry or entry.get("app") == "autoscale":
            continue
        key = f"{entry.get('app')}/{entry.get('deployment')}"
        moved[key] = max(moved.get(key, 0), entry["running"], entry.get("target") or 0)
    scaled = {k: v for k, v in moved.items() if v > 1}
    if scaled:
        bench.notes["replicas"] = (
            "compared deployments did not stay at one replica: "
            + ", ".join(f"{k} up to {v}" for k, v in sorted(scaled.items()))
        )


def write_results(bench: Bench) -> None:
    out = bench.out
    check_fixed_replicas(bench)
    data = {
        "args": vars(bench.ns),
        "rows": bench.rows,
        "notes": bench.notes,
        **bench.extra,
        "runs": bench.runner.runs,
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "results.md").write_text(render_markdown(bench))
    if bench.rows:
        plot_ratios(bench.rows, out / "summary.png")


def render_markdown(bench: Bench) -> str:
    ns = bench.ns
    gen = bench.extra.get("generator", {})
    loads = [load for r in bench.runner.runs for load in r["loadavg_1m"]]
    lines = [
        f"# ragserve bench {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Generator: `{gen.get('served_name', '?')}` ({gen.get('path', '?')}); "
        f"{ns.rounds} interleaved rounds of {ns.run_s:g} s per side, after a "
        f"{ns.warmup_s:g} s warm-up each; wall time "
        f"{bench.extra.get('wall_s', 0) / 60:.1f} min.",
        f"Machine: {os.cpu_count()} CPUs; 1-min load average during runs "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f}.",
        "",
        "B/A is the median over rounds of B's value divided by A's in the same "
        "round; the spread is the min-max of those per-round ratios.",
        "",
        "| section | workload | metric | A | B | A (median) | B (median) "
        "| B/A | spread | B-A | rounds | note |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: "
        "| --- |",
    ]
    for row in bench.rows:
        d = row["digits"]
        diff = (
            f"{row['diff_median']:+.1f} "
            f"({row['diff_min']:+.1f}..{row['diff_max']:+.1f})"
            if "diff_median" in row
            else ""
        )
        spread = (
            f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
            if row["ratio_min"] is not None
            else "-"
        )
        lines.append(
            f"| {row['section']} | {row['workload']} | {row['metric']} | {row['a']} "
            f"| {row['b']} | {_fmt(row['a_median'], d)} | {_fmt(row['b_median'], d)} "
            f"| {_fmt(row['ratio_median'], 2)} | {spread} | {diff} | {row['rounds']} "
            f"| {row['note']} |"
        )
    scaling = bench.extra.get("autoscale")
    if scaling:
        lines += [
            "",
            "## Autoscaling under a ramp (embedder: min 1, max 3, target 2 ongoing, "
            "upscale delay 2 s, downscale delay 5 s)",
            "",
            f"Peak running replicas {scaling['peak_running_replicas']} (target "
            f"{scaling['peak_target_replicas']}), reached at "
            f"{_fmt(scaling['peak_reached_s'], 1)} s; load ended at "
            f"{scaling['load_ended_s']:.1f} s; back to 1 replica at "
            f"{_fmt(scaling['back_to_one_s'], 1)} s. Plot: `{scaling['plot']}`.",
            "",
            "| offered req/s | achieved req/s | p50 ms | p95 ms |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for s in scaling["stages"]:
            lines.append(
                f"| {s['offered_rps']:g} | {s['achieved_rps']:.2f} "
                f"| {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} |"
            )
        lines += ["", "Scaling decisions (Serve controller log):", ""]
        for e in scaling["decisions"] or []:
            lines.append(
                f"- t={e['t_s']:.1f} s: {e['from']} -> {e['to']} replicas at "
                f"{e['ongoing_requests']:g} ongoing requests"
            )
        if not scaling["decisions"]:
            lines.append("- none recorded")
    if bench.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {name}: {text}" for name, text in bench.notes.items()]
    ready = bench.extra.get("ready_s")
    if ready:
        lines += [
            "",
            "Server start-up (to ready): "
            + ", ".join(f"{n} {_fmt(s)} s" for n, s in ready.items()),
        ]
    return "\n".join(lines) + "\n"


def plot_ratios(rows: list[dict[str, Any]], path: Path) -> None:
    from load_tests.plot import plt

    usable = [r for r in rows if r["ratio_median"] is not None]
    if not usable:
        return
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(usable) + 1.5))
    ys = list(range(len(usable)))
    for y, row in zip(ys, usable, strict=True):
        med = row["ratio_median"]
        ax.errorbar(
            [med],
            [y],
            xerr=[[med - row["ratio_min"]], [row["ratio_max"] - med]],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
    ax.axvline(1.0, color="grey", linestyle="--")
    # Log scale: half as fast and twice as fast sit equally far from 1.
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(
        [
            f"{r['section']}: {r['workload']} {r['metric']}\n{r['b']} / {r['a']}"
            for r in usable
        ],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("B / A (median, min-max over rounds)")
    ax.set_title("ragserve bench: ratios from interleaved runs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    p.add_argument("--out", help="results folder (default load_tests/results/<time>)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    unknown = sorted(set(ns.sections) - set(SECTIONS))
    if unknown:
        print(f"bench: error: unknown section(s) {', '.join(unknown)}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        return run_bench(ns)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
