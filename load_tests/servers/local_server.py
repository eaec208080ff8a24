"""`python -m load_tests.servers.local_server`: the same pipeline in one process.

The plain single-process FastAPI RAG server of the benchmarks: `LocalGraph`
(every engine in this process) behind the very `create_app` the graph's
ingress serves, on uvicorn. Same routes, same models, same pipeline code, so a
difference from the graph is what Ray Serve adds or saves.

    python -m load_tests.servers.local_server --config main.yaml --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def serve(config: str, host: str, port: int, max_lifetime_s: float) -> None:
    import numpy as np
    import uvicorn

    from graph.api.app import ServingContext, api_keys, create_app, model_names
    from graph.config import RagServingArgs
    from graph.local import LocalGraph
    from models.embedder import EmbedInput

    args = RagServingArgs.load(config)
    graph = LocalGraph(args)
    await graph.start()
    embedder = graph.embedder

    async def embed_with_usage(texts: list[EmbedInput]) -> tuple[np.ndarray, int]:
        def run() -> tuple[np.ndarray, int]:
            vectors, counts = embedder.embed_with_counts(texts)
            return vectors, int(sum(counts))

        return await asyncio.to_thread(run)

    async def readiness() -> dict[str, str]:
        return dict.fromkeys(
            ("embedder", "retriever", "reranker", "generator"), "ready"
        )

    ctx = ServingContext(
        args=args,
        pipeline=graph.pipeline,
        names=model_names(args),
        embed_with_usage=embed_with_usage,
        readiness=readiness,
        api_keys=api_keys(args),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    parent = os.getppid()
    deadline = time.monotonic() + max_lifetime_s

    async def watchdog() -> None:
        # Stop by ourselves when the bench that started us is gone.
        while not server.should_exit:
            await asyncio.sleep(1.0)
            if os.getppid() != parent or time.monotonic() > deadline:
                server.should_exit = True

    guard = asyncio.create_task(watchdog())
    try:
        await server.serve()
    finally:
        guard.cancel()
        graph.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.servers.local_server")
    parser.add_argument("--config", required=True, help="RagServingArgs YAML")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-lifetime-s", type=float, default=1800.0)
    ns = parser.parse_args(argv)
    if ns.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--host must be loopback")
    asyncio.run(serve(ns.config, ns.host, ns.port, ns.max_lifetime_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
