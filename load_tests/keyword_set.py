"""Write a keyword-heavy question set over a docs folder: identifiers, config
keys and error codes that one section alone names (where dense retrieval is
weak), in the eval set format (`id`, `question`, `relevant`, `evidence`).

    python -m load_tests.keyword_set --docs docs --out evals/sets/keywords.jsonl

Knows how to find backticked identifiers in markdown and the section a chunk
title names; knows nothing of indexes or metrics.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from retrieval.chunking import chunk_document
from retrieval.documents import load_documents

# `retrieval.top_k`, `release_not_found`, `max_batch_tokens`: a dot or an
# underscore, no spaces, no file names.
_IDENT = re.compile(r"`([a-z][a-z0-9]*(?:[._][a-z0-9]+)+)`")
_FILE = re.compile(r"\.(py|md|json|jsonl|yaml|txt|sh)$")
_TEMPLATES = (
    "What is {key}?",
    "What does {key} do?",
    "Where is {key} explained?",
)
# Sections are whole: labels do not depend on the chunk size.
_WHOLE = 1_000_000


def keyword_questions(docs_dir: Path, limit: int) -> list[dict[str, object]]:
    """Up to `limit` questions, one per identifier that one section names."""
    where: dict[str, set[str]] = {}
    for doc in load_documents(docs_dir):
        for chunk in chunk_document(doc, _WHOLE, 0):
            label = f"{doc.doc_id}#{chunk.title or ''}"
            for key in _IDENT.findall(chunk.text):
                if not _FILE.search(key):
                    where.setdefault(key, set()).add(label)
    unique = sorted((k, next(iter(s))) for k, s in where.items() if len(s) == 1)
    step = max(1, len(unique) // limit)
    picked = unique[::step][:limit]
    return [
        {
            "id": "kw-" + re.sub(r"[^a-z0-9]+", "-", key),
            "question": _TEMPLATES[i % len(_TEMPLATES)].format(key=key),
            "relevant": [label],
            "evidence": key,
        }
        for i, (key, label) in enumerate(picked)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", default="docs", help="the docs folder")
    parser.add_argument("--out", required=True, help="the .jsonl to write")
    parser.add_argument("--limit", type=int, default=40, help="questions at most")
    ns = parser.parse_args()
    questions = keyword_questions(Path(ns.docs), ns.limit)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text("".join(json.dumps(q) + "\n" for q in questions))
    print(f"{len(questions)} questions -> {ns.out}")


if __name__ == "__main__":
    main()
