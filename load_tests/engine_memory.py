"""`python -m load_tests.engine_memory`: one vLLM engine's memory under a
steady stream of generations, sampled per process (its owner, its EngineCore).

Knows how to start `VLLMEngine` from the default generator config, keep a few
clients generating (prompts of random lengths, some cut after a few chunks,
or with `--fixed` one length and no cuts), and read each process's RSS and
private memory every `--sample-s`; no Ray, no graph. Used to tell growth that
follows new step shapes from growth that follows requests
(load_tests/README.md, "Soak").

    python -m load_tests.engine_memory --duration-s 300 [--fixed]
        [--onednn-primitive-cache N|default]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from typing import Any

import psutil

from load_tests.procs import process_memory_mib

WORDS = (  # noqa: SIM905  (a sentence reads better than a 20-item list)
    "the quick brown fox jumps over a lazy dog while retrieval augmented "
    "generation serves a graph of steps on ray"
).split()


def sample(counted: int) -> dict[str, Any]:
    """RSS and USS (MiB) of this process and each descendant, by name."""
    me = psutil.Process()
    row: dict[str, Any] = {"t": round(time.time(), 1), "chunks": counted}
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = proc.name()
        except psutil.Error:  # exited since the listing
            continue
        mem = process_memory_mib(proc)
        if mem is not None:
            row[f"{name}:{proc.pid}"] = {k: round(v, 1) for k, v in mem.items()}
    return row


async def client(
    engine: Any, rng: random.Random, fixed: bool, stop: float, count: list[int]
) -> None:
    """Generate until `stop`; `count[0]` counts chunks."""
    from models.generation import GenerationRequest, SamplingOptions

    while time.time() < stop:
        words = 200 if fixed else rng.randint(5, 600)
        request = GenerationRequest(
            request_id=uuid.uuid4().hex,
            messages=[
                {"role": "user", "content": " ".join(rng.choices(WORDS, k=words))}
            ],
            sampling=SamplingOptions(
                max_tokens=32 if fixed else rng.randint(4, 64), temperature=0.7
            ),
        )
        cut_after = None if fixed or rng.random() >= 0.3 else 3
        seen = 0
        stream = engine.generate(request)
        async for _ in stream:
            seen += 1
            count[0] += 1
            if cut_after is not None and seen > cut_after:
                await stream.aclose()
                await engine.abort(request.request_id)
                break
        if not fixed:
            await asyncio.sleep(rng.random() * 0.5)


async def run(ns: argparse.Namespace) -> list[dict[str, Any]]:
    from models.config import GeneratorConfig
    from models.vllm_engine import VLLMEngine

    engine = VLLMEngine(GeneratorConfig(onednn_primitive_cache=ns.onednn_cache))
    await engine.start()
    rng, count, rows = random.Random(ns.seed), [0], []
    stop = time.time() + ns.duration_s

    async def sampler() -> None:
        while time.time() < stop + 0.5:
            rows.append(sample(count[0]))
            print(json.dumps(rows[-1]), flush=True)
            await asyncio.sleep(ns.sample_s)

    try:
        clients = [
            client(engine, rng, ns.fixed, stop, count) for _ in range(ns.clients)
        ]
        await asyncio.gather(sampler(), *clients)
    finally:
        engine.shutdown()
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The probe's command line."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.engine_memory")
    parser.add_argument("--duration-s", type=float, default=300)
    parser.add_argument("--sample-s", type=float, default=30)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fixed", action="store_true", help="one prompt length, no cuts"
    )
    parser.add_argument(
        "--onednn-primitive-cache",
        dest="onednn_cache",
        type=lambda v: None if v == "default" else int(v),
        default=0,
        help="the generator's onednn_primitive_cache ('default': oneDNN's 1024)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    asyncio.run(run(ns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
