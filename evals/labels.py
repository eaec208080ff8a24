"""Whether a set's labels still hold for a docs folder.

Knows how a label names a document or a section (as the chunker titles it)
and that a question's `evidence` must still be found, verbatim up to
whitespace and case, in the text one of its labels names; knows nothing of
indexes or metrics.
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.questions import SECTION_SEP, QuestionSet
from retrieval.chunking import chunk_document
from retrieval.documents import load_documents

#: Big enough that every section is one chunk: titles do not depend on size.
_WHOLE = 1_000_000


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def label_texts(docs_dir: str | Path) -> dict[str, str]:
    """Every label a docs folder offers (`doc`, `doc#Section`) with its text."""
    texts: dict[str, str] = {}
    for doc in load_documents(docs_dir):
        texts[doc.doc_id] = _norm(doc.text)
        for chunk in chunk_document(doc, _WHOLE, 0):
            key = f"{doc.doc_id}{SECTION_SEP}{chunk.title or ''}"
            texts[key] = (texts.get(key, "") + " " + _norm(chunk.text)).strip()
    return texts


def check_labels(qset: QuestionSet, docs_dir: str | Path) -> list[str]:
    """One line per broken label: a document or section that no longer
    exists, or evidence that none of the question's labels holds any more."""
    texts = label_texts(docs_dir)
    problems = []
    for q in qset.questions:
        for label in q.relevant:
            if not label.startswith("chunk:") and label not in texts:
                problems.append(f"{q.id}: {label!r} is not in {docs_dir}")
        if q.evidence and not any(
            _norm(q.evidence) in texts.get(label, "") for label in q.relevant
        ):
            problems.append(
                f"{q.id}: evidence {q.evidence[:50]!r} is in none of "
                f"{', '.join(q.relevant)}"
            )
    return problems
