"""What an index update costs against a full rebuild, what hybrid search costs
against dense, and what each first-stage mode retrieves.

    python -m load_tests.index_bench cost --chunks 10000 --out R.json
    python -m load_tests.index_bench quality --index IDX --set evals/sets/X.jsonl

`cost` builds a synthetic corpus of >= N one-section chunks, times (wall and
this process's CPU, the embedder's threads included) a full build and a
one-document update of it, then the search latency of each mode at 1 and 32
concurrent clients (query vectors embedded beforehand: the first stage
alone, no Ray). `quality` ranks a question set's sections by each mode
(first stage, then fused with the fusion reranker) and scores them with
ir-measures (section-level, a section at its best chunk's rank).

Knows the synthetic corpus, the timings and the measures; the index itself is
`retrieval`'s.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bm25_index import build_bm25
from retrieval.faiss_index import FaissRetriever
from retrieval.index import build_index, embedding_text
from retrieval.manifest import read_manifest
from retrieval.types import SearchKind, SearchMode
from retrieval.update import changes_from_folder, update_index

MODES: tuple[SearchKind, ...] = ("dense", "sparse", "hybrid")
_WORDS_PER_CHUNK = 60  # one section, one chunk at chunk_size 200


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), _cpu_s()
    out = fn()
    return out, time.perf_counter() - wall, _cpu_s() - cpu


def _section(rng: random.Random, vocab: list[str], doc: int, part: int) -> str:
    words = rng.choices(vocab, k=_WORDS_PER_CHUNK)
    words[rng.randrange(len(words))] = f"cfg_{doc}_{part}.timeout_s"
    return f"## Part {part} of topic {doc}\n\n" + " ".join(words) + ".\n"


def synthetic_docs(root: Path, chunks: int, per_doc: int = 4, seed: int = 7) -> int:
    """Write ceil(chunks / per_doc) markdown documents of `per_doc`
    one-chunk sections each (random words of a 3,000-word vocabulary, one
    config-key-like identifier per section); returns the document count."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu"]
    vocab = sorted(
        {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(4000)}
    )[:3000]
    docs = -(-chunks // per_doc)
    root.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        body = "".join(_section(rng, vocab, d, p) for p in range(per_doc))
        (root / f"topic-{d:05d}.md").write_text(f"# Topic {d}\n\n{body}")
    return docs


def _latency(
    retriever: FaissRetriever,
    vectors: np.ndarray,
    queries: list[str],
    mode: SearchMode,
    clients: int,
) -> dict[str, float]:
    def one(i: int) -> float:
        t0 = time.perf_counter()
        retriever.search(vectors[i : i + 1], 12, [queries[i]], mode)
        return (time.perf_counter() - t0) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ms = sorted(pool.map(one, range(len(queries))))
    took = time.perf_counter() - started
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "queries_per_s": round(len(ms) / took, 1),
    }


def _words(docs: Path, doc: int) -> list[str]:
    return (docs / f"topic-{doc:05d}.md").read_text().split()


def _edit_one(docs: Path, doc: int) -> None:
    path = docs / f"topic-{doc:05d}.md"
    text = path.read_text()
    path.write_text(text.replace("## Part 1 ", "## Part 1 (revised) ", 1))


def cost(ns: argparse.Namespace, embedder: Any) -> dict[str, Any]:
    work = Path(ns.work or tempfile.mkdtemp(prefix="index-bench-"))
    docs = work / "docs"
    n_docs = synthetic_docs(docs, ns.chunks)
    manifest, build_s, build_cpu = _timed(
        lambda: build_index(docs, work / "idx", embedder, progress=False)
    )
    updates, parent = [], work / "idx"
    for i, doc in enumerate((11, n_docs // 2, n_docs - 3)):
        _edit_one(docs, doc)

        def one_update(p: Path = parent, i: int = i) -> tuple[Any, Path]:
            changes = changes_from_folder(read_manifest(p), docs)
            return update_index(p, changes, embedder, work / f"u{i}")

        (m, parent), wall, cpu = _timed(one_update)
        updates.append({"wall_s": wall, "cpu_s": cpu, **m.changes.model_dump()})
    rng = random.Random(3)
    queries = [
        f"cfg_{rng.randrange(n_docs)}_{rng.randrange(4)}.timeout_s"
        if i % 2
        else " ".join(rng.sample(_words(docs, rng.randrange(n_docs)), 6))
        for i in range(ns.queries)
    ]
    vectors = embedder.embed(queries)
    retriever = FaissRetriever.load(
        work / "idx", embedder.model_id, embedder.dimension, "never"
    )
    texts = [embedding_text(c) for c in retriever._chunks]
    _, bm25_s, bm25_cpu = _timed(lambda: build_bm25(texts))
    latency = {
        mode: {
            f"{c}_clients": _latency(retriever, vectors, queries, SearchMode(mode), c)
            for c in (1, 32)
        }
        for mode in MODES
    }
    return {
        "chunks": manifest.chunk_count,
        "documents": n_docs,
        "full_build": {"wall_s": build_s, "cpu_s": build_cpu},
        "one_document_update": updates,
        "bm25_reindex": {"wall_s": bm25_s, "cpu_s": bm25_cpu},
        "search_latency": latency,
        "work": str(work),
    }


def _rankings(
    retriever: FaissRetriever,
    embedder: Any,
    questions: list[dict[str, Any]],
    mode: SearchMode,
    reranker: Any | None,
) -> list[list[Any]]:
    texts = [q["question"] for q in questions]
    found = retriever.search(embedder.embed(texts), 12, texts, mode)
    if reranker is None:
        return found
    out = []
    for text, hits in zip(texts, found, strict=True):
        known = [h.cosine for h in hits]
        dense = None if None in known else known
        scores = reranker.score(text, [h.text for h in hits], dense)
        order = sorted(range(len(hits)), key=lambda i: -scores[i])
        out.append([hits[i] for i in order])
    return out


def _scores(questions: list[dict[str, Any]], rankings: list[list[Any]]) -> dict:
    import ir_measures
    from ir_measures import RR, R, Success, nDCG

    qrels, run = [], []
    for q, hits in zip(questions, rankings, strict=True):
        labels = set(q["relevant"])
        qrels += [ir_measures.Qrel(q["id"], label, 1) for label in labels]
        units = dict.fromkeys(
            f"{h.doc_id}#{h.title or ''}"
            if f"{h.doc_id}#{h.title or ''}" in labels or h.doc_id not in labels
            else h.doc_id
            for h in hits
        )
        run += [
            ir_measures.ScoredDoc(q["id"], unit, float(len(units) - r))
            for r, unit in enumerate(units)
        ]
    named = {"hit@1": Success @ 1, "recall@12": R @ 12, "mrr@10": RR @ 10}
    named["ndcg@10"] = nDCG @ 10
    per_q = {m: 0.0 for m in named}
    for metric in ir_measures.iter_calc(list(named.values()), qrels, run):
        name = next(k for k, v in named.items() if v == metric.measure)
        per_q[name] += metric.value
    return {k: round(v / len(questions), 3) for k, v in per_q.items()}


def quality(ns: argparse.Namespace, embedder: Any) -> dict[str, Any]:
    from models.config import RerankerConfig
    from models.reranker import FusionReranker

    retriever = FaissRetriever.load(
        ns.index, embedder.model_id, embedder.dimension, "never"
    )
    fusion = FusionReranker(embedder, dense_weight=RerankerConfig().dense_weight)
    table: dict[str, Any] = {}
    for path in ns.set:
        lines = Path(path).read_text().splitlines()
        questions = [json.loads(line) for line in lines if line.strip()]
        table[Path(path).name] = {
            f"{mode}{' + fusion rerank' if rr else ''}": _scores(
                questions,
                _rankings(retriever, embedder, questions, SearchMode(mode), rr),
            )
            for rr in (None, fusion)
            for mode in MODES
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost", help="update vs rebuild; dense vs hybrid latency")
    c.add_argument("--chunks", type=int, default=10_000)
    c.add_argument("--queries", type=int, default=400)
    c.add_argument("--work", help="folder for the corpus and indexes (default tmp)")
    q = sub.add_parser("quality", help="each mode's retrieval over question sets")
    q.add_argument("--index", required=True)
    q.add_argument("--set", action="append", required=True)
    for p in (c, q):
        p.add_argument("--out", help="write the JSON result here too")
    ns = parser.parse_args()
    from models.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder("default")
    result = (cost if ns.what == "cost" else quality)(ns, embedder)
    text = json.dumps(result, indent=2)
    print(text)
    if ns.out:
        Path(ns.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
