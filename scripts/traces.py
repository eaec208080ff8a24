"""`make traces`: start, stop and find the local trace viewer (Arize Phoenix).

Knows how to run `phoenix serve` on loopback in the background, where its
state lives (a JSON file beside its database) and which OTLP endpoint
`make serve` should export to; knows nothing of ragserve's spans. Standard
library only: it runs under the viewer's own venv and under ours.

    python scripts/traces.py start --venv .venv-traces --dir DIR
    python scripts/traces.py stop --dir DIR
    python scripts/traces.py detect --dir DIR   # prints the endpoint, or nothing
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

PROG = "traces"
STATE = "viewer.json"
LOG = "phoenix.log"
HOST = "127.0.0.1"
JAEGER_GRPC = 4317
LAUNCHER = Path(__file__).with_name("phoenix_loopback.py")


class TracesError(Exception):
    """A one-line, user-facing problem."""


@dataclass
class Viewer:
    """A started viewer: what `stop` may end and what `detect` reports."""

    pid: int
    ui: str
    otlp_grpc: str
    otlp_http: str


def state_path(workdir: Path) -> Path:
    return workdir / STATE


def read_state(workdir: Path) -> Viewer | None:
    try:
        data = json.loads(state_path(workdir).read_text())
        return Viewer(**data)
    except (OSError, ValueError, TypeError):
        return None


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def is_viewer_process(pid: int) -> bool:
    """True when `pid` runs and its command line is our `phoenix serve` launcher.

    Guards `stop` against a pid that the system reused for something else.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [Path(a.decode(errors="replace")).name for a in argv if a]
    return LAUNCHER.name in words and "serve" in words


def healthy(ui: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{ui}/healthz", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(venv: Path, workdir: Path, port: int, grpc_port: int, wait_s: float) -> str:
    """Start `phoenix serve` in the background unless ours already runs."""
    current = read_state(workdir)
    if current and is_viewer_process(current.pid) and healthy(current.ui):
        return f"Phoenix already runs (pid {current.pid}): UI {current.ui}"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "phoenix").exists():
        raise TracesError(f"no Phoenix in {venv}; run 'make traces' to install it")
    for p, what in ((port, "--port"), (grpc_port, "--grpc-port")):
        if port_open(p):
            raise TracesError(
                f"127.0.0.1:{p} ({what}) is taken by another program; "
                f"choose another with TRACES_PORT / TRACES_GRPC_PORT"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PHOENIX_HOST=HOST,
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir),
        # No model hub or analytics endpoint is reachable (or wanted) here.
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    with (workdir / LOG).open("ab") as log:
        proc = subprocess.Popen(
            [str(python), str(LAUNCHER), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    viewer = Viewer(
        pid=proc.pid,
        ui=f"http://{HOST}:{port}",
        otlp_grpc=f"http://{HOST}:{grpc_port}",
        otlp_http=f"http://{HOST}:{port}/v1/traces",
    )
    state_path(workdir).write_text(json.dumps(asdict(viewer)))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            state_path(workdir).unlink(missing_ok=True)
            raise TracesError(
                f"phoenix serve exited with {proc.returncode}; see {workdir / LOG}"
            )
        if healthy(viewer.ui) and port_open(grpc_port):
            return (
                f"Phoenix (pid {proc.pid}): UI {viewer.ui}, OTLP gRPC "
                f"{viewer.otlp_grpc}, OTLP/HTTP {viewer.otlp_http}; 'make serve' "
                "now exports to it, 'make traces-stop' stops it"
            )
        time.sleep(1)
    stop(workdir)
    raise TracesError(f"Phoenix was not ready in {wait_s:.0f} s; see {workdir / LOG}")


def stop(workdir: Path, wait_s: float = 20.0) -> str:
    """End the viewer this script started (by its pid), nothing else."""
    current = read_state(workdir)
    state_path(workdir).unlink(missing_ok=True)
    if current is None:
        return "Phoenix is not running (no state file)"
    if not is_viewer_process(current.pid):
        return f"Phoenix is not running (pid {current.pid} is gone or not phoenix)"
    # start_new_session made the viewer a group leader: its group is what it
    # started (uvicorn workers, if any), and only that.
    os.killpg(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and is_viewer_process(current.pid):
        time.sleep(0.2)
    if is_viewer_process(current.pid):
        os.killpg(current.pid, signal.SIGKILL)
    return f"Phoenix stopped (pid {current.pid})"


def detect(
    workdir: Path, env: dict[str, str], jaeger_port: int = JAEGER_GRPC
) -> tuple[str, str]:
    """The OTLP endpoint `make serve` should set, and why (a line for stderr).

    An endpoint already in the environment wins (nothing to set); then this
    script's Phoenix; then anything on Jaeger's OTLP gRPC port 4317
    (`make jaeger`); else "" and tracing stays off.
    """
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if env.get(name):
            return "", f"tracing: exporting to {env[name]} (from {name})"
    viewer = read_state(workdir)
    if viewer and is_viewer_process(viewer.pid):
        grpc_port = int(viewer.otlp_grpc.rsplit(":", 1)[1])
        if port_open(grpc_port):
            return viewer.otlp_grpc, (
                f"tracing: exporting to Phoenix at {viewer.otlp_grpc} (UI {viewer.ui})"
            )
    if port_open(jaeger_port):
        endpoint = f"http://{HOST}:{jaeger_port}"
        return endpoint, (
            f"tracing: exporting to Jaeger at {endpoint} (UI http://{HOST}:16686)"
        )
    return "", (
        "tracing: off (no OTLP receiver found; 'make traces' or 'make jaeger' "
        "starts one, then restart 'make serve')"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "detect"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", type=Path, required=True, help="viewer data dir")
    start_cmd = sub.choices["start"]
    start_cmd.add_argument("--venv", type=Path, required=True)
    start_cmd.add_argument("--port", type=int, default=6006, help="UI + OTLP/HTTP")
    start_cmd.add_argument("--grpc-port", type=int, default=4317, help="OTLP gRPC")
    start_cmd.add_argument("--wait", type=float, default=600.0, help="seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "start":
            print(start(ns.venv, ns.dir, ns.port, ns.grpc_port, ns.wait))
        elif ns.command == "stop":
            print(stop(ns.dir))
        else:
            endpoint, why = detect(ns.dir, dict(os.environ))
            print(why, file=sys.stderr)
            print(endpoint)
    except TracesError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
