"""`phoenix serve` with its OTLP gRPC receiver bound to 127.0.0.1, not `[::]`.

Phoenix binds its web UI and OTLP/HTTP to `PHOENIX_HOST`, but its gRPC
receiver to every interface with no setting to change it
(`phoenix/server/grpc_server.py`: `add_insecure_port("[::]:PORT")`). ragserve
keeps its development traffic on loopback, so this launcher rewrites that one
address and then runs Phoenix's own entry point unchanged. Runs in the
viewer's venv (`.venv-traces`), which has Phoenix; ours does not.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc.aio  # type: ignore[import-not-found, unused-ignore]

LOOPBACK = "127.0.0.1"
_make_server = grpc.aio.server


def _loopback_server(*args: Any, **kwargs: Any) -> Any:
    server = _make_server(*args, **kwargs)
    add_port = server.add_insecure_port

    def add_insecure_port(address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{LOOPBACK}:{address.rsplit(':', 1)[1]}"
        return int(add_port(address))

    server.add_insecure_port = add_insecure_port
    return server


def main() -> int:
    grpc.aio.server = _loopback_server
    from phoenix.server.main import main as phoenix_main  # type: ignore[import-not-found, unused-ignore]

    sys.argv = ["phoenix", *sys.argv[1:]]
    return int(phoenix_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
