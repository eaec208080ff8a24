"""What a bench measures with: the generator model, the index, graph configs.

Knows the graph's config as plain YAML (the bench imports none of the graph)
and how to prepare the models and index by running the `ragserve` CLI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from load_tests.bench.servers import OFFLINE_ENV, REPO, BenchError, log


@dataclass(frozen=True)
class Generator:
    path: str
    served_name: str
    kv_cache_bytes: int
    env: dict[str, str]


def graph_config(
    index_dir: str, gen: Generator, port: int, **overrides: Any
) -> dict[str, Any]:
    """A graph that fits 2 CPUs four times over (fractional replicas)."""
    config: dict[str, Any] = {
        "models": {
            "generator": {
                "model": gen.path,
                "served_model_name": gen.served_name,
                "max_model_len": 2048,
                "max_num_seqs": 8,
                "kv_cache_memory_bytes": gen.kv_cache_bytes,
                "default_max_tokens": 16,
                "env": gen.env,
            }
        },
        # 1500 characters of context keep the prompt well inside 2048 tokens.
        "retrieval": {
            "index_dir": index_dir,
            "top_k": 8,
            "top_n": 3,
            "max_context_chars": 1500,
        },
        # One replica each, fixed: a comparison must not be decided by one
        # side autoscaling (the node defaults autoscale up to 2).
        "deployments": {
            "ingress": {"num_cpus": 0.05, "num_replicas": 1},
            "embedder": {"num_cpus": 0.1, "num_replicas": 1},
            "retriever": {"num_cpus": 0.05, "num_replicas": 1},
            "reranker": {"num_cpus": 0.05, "num_replicas": 1},
            "generator": {"num_cpus": 0.15, "num_replicas": 1},
        },
        "server": {"host": "127.0.0.1", "port": port},
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --- runs -----------------------------------------------------------------------


def prepare_generator(ns: argparse.Namespace) -> Generator:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if ns.generator == "tiny":
        cache = Path(
            os.environ.get("RAGSERVE_TEST_CACHE", "~/.cache/ragserve/test")
        ).expanduser()
        code = (
            "import sys; from pathlib import Path; "
            "from tests.factories import build_tiny_llama; "
            "print(build_tiny_llama(Path(sys.argv[1])))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(cache / "tiny-llama")],
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise BenchError(f"building the tiny Llama failed: {proc.stderr[-500:]}")
        return Generator(
            proc.stdout.strip().splitlines()[-1], "tiny-llama", 64 << 20, env
        )
    if ns.generator == "smollm2":
        proc = subprocess.run(
            [sys.executable, "-m", "graph.cli.main", "models", "prepare", "-q"],
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise BenchError(f"ragserve models prepare failed: {proc.stderr[-500:]}")
        path = proc.stdout.strip().splitlines()[-1]
        return Generator(path, "SmolLM2-135M-Instruct", 256 << 20, env)
    path = str(Path(ns.generator).expanduser())
    return Generator(path, Path(path).name, 256 << 20, env)


def prepare_index(ns: argparse.Namespace, out: Path) -> str:
    index = Path(ns.index).expanduser()
    if (index / "manifest.json").is_file():
        return str(index)
    built = out / "index"
    log(f"no index at {index}: building one from docs/ into {built}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "graph.cli.main",
            "index",
            "build",
            "--docs",
            str(REPO / "docs"),
            "--out",
            str(built),
            "-q",
        ],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise BenchError(f"index build failed: {proc.stderr[-500:]}")
    return str(built)
