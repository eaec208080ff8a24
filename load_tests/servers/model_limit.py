"""`python -m load_tests.servers.model_limit CONFIG`: the models' own speed.

The reference of the bench's batching targets: the embedder and the reranker
of a config, alone in one process with that config's threads, at batch 32,
no serving around them. Prints one JSON line: `embedder_texts_per_s`,
`reranker_pairs_per_s` (8 passages per query, as the bench's rerank requests).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence

TEXTS = [
    "How does ragserve batch requests across the graph?",
    "The reranker scores each retrieved passage against the question.",
    "Ray Serve routes each request to a replica of the deployment.",
    "What does the generator do when the prompt is too long?",
]


def rate(fn: Callable[[], object], items: int, seconds: float) -> float:
    fn()  # warm-up: first shapes, lazy imports
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        fn()
        done += items
    return done / (time.perf_counter() - began)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    from graph.config import RagServingArgs
    from models.threads import torch_process_env

    args = RagServingArgs.load(args_list[0] if args_list else None)
    # As the graph's replicas get it, before torch loads.
    for key, value in torch_process_env(args.models.embedder.threads).items():
        os.environ.setdefault(key, value)
    from graph.engines import make_embedder, make_reranker

    embedder = make_embedder(args.models.embedder)
    texts = [TEXTS[i % len(TEXTS)] for i in range(32)]
    out = {"embedder_texts_per_s": rate(lambda: embedder.embed(texts), 32, 5.0)}
    reranker = make_reranker(
        args.models.reranker, args.models.embedder, embedder=embedder
    )
    items = [(TEXTS[i % 4], [TEXTS[(i + j) % 4] for j in range(8)]) for i in range(32)]
    out["reranker_pairs_per_s"] = rate(
        lambda: reranker.score_many(list(items)), 32 * 8, 5.0
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
