"""Quality against latency per index type and reranker setting, on one set.

    python -m load_tests.eval_tradeoffs --docs docs --out DIR [--set FILE]

Builds one index per variant (flat; IVF visiting every list and one list;
HNSW) with `ragserve index build`, runs `ragserve eval` on each (its dense
order is the reranker off, its reranked order the reranker on), and writes
`tradeoffs.md` (a table), `tradeoffs.json` and `tradeoffs.png` (hit@1 against
p50 retrieval latency). Speaks to ragserve only through its command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

VARIANTS = {
    "flat": ["--index-type", "flat"],
    "ivf (nprobe 8)": ["--index-type", "ivf"],
    "ivf (nprobe 1)": ["--index-type", "ivf", "--set", "retrieval.build.ivf_nprobe=1"],
    "hnsw": ["--index-type", "hnsw"],
}
CLI = [sys.executable, "-m", "graph.cli.main"]


def run_variant(name: str, flags: list[str], ns: argparse.Namespace) -> dict[str, Any]:
    slug = name.replace(" ", "").replace("(", "-").replace(")", "")
    index, result = ns.out / f"index-{slug}", ns.out / f"eval-{slug}.json"
    build = [*CLI, "index", "build", "--docs", ns.docs, "--out", str(index), "-q"]
    subprocess.run([*build, *flags], check=True)
    evaluate = [*CLI, "eval", "--index", str(index), "--out", str(result)]
    if ns.set:
        evaluate += ["--set", ns.set]
    subprocess.run(evaluate, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads(result.read_text()))


def rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, r in results.items():
        for order, request in (
            ("dense", "dense_request"),
            ("reranked", "reranked_request"),
        ):
            doc, section = (
                r["retrieval"][order]["doc"],
                r["retrieval"][order]["section"],
            )
            out.append(
                {
                    "index": name,
                    "reranker": "on" if order == "reranked" else "off",
                    "hit@1": doc["hit@1"],
                    "hit@5": doc["hit@5"],
                    "mrr@10": doc["mrr@10"],
                    "ndcg@10": doc["ndcg@10"],
                    "section hit@1": section["hit@1"],
                    "section mrr@10": section["mrr@10"],
                    "p50 ms": r["latency_ms"][request]["p50"],
                    "p95 ms": r["latency_ms"][request]["p95"],
                }
            )
    return out


def table(data: list[dict[str, Any]]) -> str:
    head = list(data[0])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in data:
        cells = [
            f"{v:.3f}"
            if isinstance(v, float) and "ms" not in k
            else (f"{v:.1f}" if isinstance(v, float) else str(v))
            for k, v in row.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(data: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in data:
        marker = "o" if row["reranker"] == "on" else "x"
        ax.scatter(row["p50 ms"], row["section hit@1"], marker=marker, s=60)
        ax.annotate(
            f"{row['index']}, rerank {row['reranker']}",
            (row["p50 ms"], row["section hit@1"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("p50 retrieval request, ms (embed + search [+ rerank])")
    ax.set_ylabel("section hit@1")
    ax.set_title("Bundled set: quality against latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eval_tradeoffs", description=__doc__)
    p.add_argument("--docs", default="docs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", help="question set (default: the bundled one)")
    ns = p.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    results = {name: run_variant(name, flags, ns) for name, flags in VARIANTS.items()}
    data = rows(results)
    (ns.out / "tradeoffs.json").write_text(json.dumps(data, indent=2) + "\n")
    (ns.out / "tradeoffs.md").write_text(table(data) + "\n")
    plot(data, ns.out / "tradeoffs.png")
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
