"""A real Prometheus server (Debian's `prometheus`) scraping given targets on
loopback, queried over its HTTP API; started and stopped by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """`prometheus` on 127.0.0.1, scraping `targets` every `interval_s`."""

    def __init__(self, targets: list[str], interval_s: float = 1.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus is not installed: `make test-tools` installs "
                "Debian's prometheus package"
            )
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="ragserve-prometheus-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                # A busy Ray agent may take seconds to answer: time out only
                # when the next scrape is due.
                "scrape_interval": f"{round(interval_s * 1000)}ms",
                "scrape_timeout": f"{round(interval_s * 1000)}ms",
                "evaluation_interval": f"{round(interval_s * 1000)}ms",
            },
            "scrape_configs": [
                {"job_name": "ray", "static_configs": [{"targets": targets}]}
            ],
        }
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                self._binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError("prometheus did not become ready in 60 s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log(self) -> str:
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (`[{"metric": {...}, "value": [t, v]}]`).

        Raises:
            RuntimeError: Prometheus refused the query (bad PromQL).
        """
        answer = httpx.get(
            f"{self.url}/api/v1/query", params={"query": expr}, timeout=10
        ).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"{expr}: {answer.get('error')}")
        return list(answer["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        """Each target's `scrapeUrl`, `health` and `lastError`."""
        active = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
            for t in active["data"]["activeTargets"]
        ]
