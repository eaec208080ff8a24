"""`make traces` / `make traces-stop` and the export detection of `make serve`.

Phoenix itself (an 850 MB venv) is not installed by `make test`: a real
process that listens like it and carries its launcher's command line stands in
for it, so what is checked is ragserve's own wiring: which endpoint `make serve`
picks, that `make traces-stop` ends exactly the started process, and that a
stale or reused pid is never signalled.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import traces

ROOT = Path(__file__).resolve().parents[2]

# Listens on the port in argv[1] as Phoenix's OTLP gRPC receiver does, until killed.
_LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """A process whose command line is `... phoenix_loopback.py serve`, listening."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LISTENER, str(port), str(traces.LAUNCHER), "serve"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not traces.port_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    state = traces.Viewer(
        pid=proc.pid,
        ui="http://127.0.0.1:1",
        otlp_grpc=f"http://127.0.0.1:{port}",
        otlp_http="http://127.0.0.1:1/v1/traces",
    )
    traces.state_path(tmp_path).write_text(json.dumps(state.__dict__))
    try:
        yield proc, tmp_path, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the repo root, free of an outer make's flags (make test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there now


def test_detect_prefers_an_endpoint_already_set(tmp_path: Path) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    endpoint, why = traces.detect(tmp_path, env, jaeger_port=closed_port())
    assert endpoint == ""  # nothing for make serve to override
    assert "http://collector:4317" in why
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in why


def test_detect_picks_the_started_phoenix(viewer) -> None:
    _, workdir, port = viewer
    endpoint, why = traces.detect(workdir, {}, jaeger_port=closed_port())
    assert endpoint == f"http://127.0.0.1:{port}"
    assert why.startswith("tracing: exporting to Phoenix")


def test_detect_falls_back_to_a_jaeger_port_then_off(tmp_path: Path) -> None:
    with socket.socket() as jaeger:
        jaeger.bind(("127.0.0.1", 0))
        jaeger.listen()
        port = jaeger.getsockname()[1]
        endpoint, why = traces.detect(tmp_path, {}, jaeger_port=port)
        assert endpoint == f"http://127.0.0.1:{port}"
        assert "Jaeger" in why
    endpoint, why = traces.detect(tmp_path, {}, jaeger_port=port)
    assert endpoint == ""
    assert "tracing: off" in why and "make traces" in why


def test_stop_never_signals_a_pid_that_is_not_the_viewer(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = traces.Viewer(other.pid, "u", "http://127.0.0.1:1", "h")
        traces.state_path(tmp_path).write_text(json.dumps(state.__dict__))
        message = traces.stop(tmp_path)
        assert "not running" in message
        assert other.poll() is None  # still alive
        assert not traces.state_path(tmp_path).exists()
    finally:
        other.kill()
        other.wait()


def test_make_traces_stop_ends_the_started_viewer(viewer) -> None:
    proc, workdir, _ = viewer
    done = run_make("traces-stop", f"TRACES_DIR={workdir}")
    assert done.returncode == 0, done.stderr
    assert f"Phoenix stopped (pid {proc.pid})" in done.stdout
    assert proc.wait(timeout=10) != 0  # ended by a signal
    assert not traces.state_path(workdir).exists()
    again = run_make("traces-stop", f"TRACES_DIR={workdir}")
    assert again.returncode == 0 and "not running" in again.stdout


def test_start_refuses_without_phoenix_and_when_a_port_is_taken(
    tmp_path: Path,
) -> None:
    with pytest.raises(traces.TracesError, match="make traces"):
        traces.start(tmp_path / "no-venv", tmp_path, free_port(), free_port(), 1)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "phoenix").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(traces.TracesError, match=f"127.0.0.1:{port}"):
            traces.start(venv, tmp_path, port, free_port(), 1)
    assert not traces.state_path(tmp_path).exists()


def test_make_serve_and_traces_are_wired_to_the_script() -> None:
    out = run_make("-n", "serve", "traces", "TRACES_DIR=/d").stdout
    assert 'scripts/traces.py detect --dir "/d"' in out
    assert 'export OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint"' in out
    assert "scripts/traces.py start --venv .venv-traces" in out
    assert "--port 6006 --grpc-port 4317" in out
