"""Server processes of a bench: started, waited for, their CPU read, stopped.

Knows subprocesses, process groups and readiness URLs; every server is ended
by PID (and its process group) on the way out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from load_tests.bench.cpu import tree_cpu_s

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "load_tests" / "results"
#: Ray starts its workers at niceness 15; the other servers get the same, so
#: the load generator and other jobs compete alike with every server measured.
RAY_WORKER_NICENESS = 15
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

    def cpu_s(self, name: str, other_apps: frozenset[str] = frozenset()) -> float:
        """CPU-seconds so far of server `name` and every process it started
        (Serve replicas of `other_apps` left out)."""
        return tree_cpu_s(self.running[name].process.pid, other_apps)

    def idle_cpu(self, seconds: float = 10.0) -> dict[str, float]:
        """CPU-seconds per second of every running server with no load."""
        before = {n: self.cpu_s(n) for n in self.running}
        time.sleep(seconds)
        return {n: (self.cpu_s(n) - c) / seconds for n, c in before.items()}

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
