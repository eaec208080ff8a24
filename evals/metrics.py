"""Retrieval metrics of ranked chunks against a question's labels, by ir-measures.

Knows how a retrieved chunk becomes a judged unit (its document, or its section
when the labels name sections, or its chunk id) and which measures the eval
reports (hit@1, hit@5, recall@k, MRR@10, nDCG@10, computed by `ir_measures`
over pytrec_eval); knows nothing of indexes or models.

A ranking of chunks becomes a ranking of units by first occurrence (BEIR's
MaxP for passages of documents): three chunks of one document are that
document once, at the rank of its best chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Literal

import ir_measures
from ir_measures import RR, R, Success, nDCG

from evals.questions import SECTION_SEP, Question, chunk_label
from retrieval.types import Hit

Level = Literal["doc", "section"]


def measures(k: int) -> dict[str, ir_measures.Measure]:
    """The reported measures by their names in tables and JSON."""
    return {
        "hit@1": Success @ 1,
        "hit@5": Success @ 5,
        f"recall@{k}": R @ k,
        "mrr@10": RR @ 10,
        "ndcg@10": nDCG @ 10,
    }


def level_labels(question: Question, level: Level) -> set[str]:
    """The question's labels at `level`: for "doc", sections become their
    document; chunk ids stay chunk ids."""
    if level == "section":
        return set(question.relevant)
    return {label.split(SECTION_SEP, 1)[0] for label in question.relevant}


def unit_of(hit: Hit, labels: set[str], level: Level) -> str:
    """The unit `hit` is judged as: the most specific label it matches, else
    its document (level "doc") or section (level "section"). A document id
    also matches without its suffix (`faq` labels `faq.md`: BEIR corpus ids
    indexed as one file each)."""
    stem = str(PurePosixPath(hit.doc_id).with_suffix(""))
    section = f"{SECTION_SEP}{hit.title or ''}"
    candidates = [chunk_label(hit.chunk_id)]
    if level == "section":
        candidates += [hit.doc_id + section, stem + section]
    candidates += [hit.doc_id, stem]
    for candidate in candidates:
        if candidate in labels:
            return candidate
    return hit.doc_id + section if level == "section" else hit.doc_id


def ranked_units(hits: Sequence[Hit], labels: set[str], level: Level) -> list[str]:
    """Units in rank order, each once (at its best chunk's rank)."""
    return list(dict.fromkeys(unit_of(h, labels, level) for h in hits))


def retrieval_metrics(
    questions: Sequence[Question],
    rankings: Sequence[Sequence[Hit]],
    level: Level,
    k: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean per measure over all questions, per question id per measure).

    A question with nothing retrieved scores 0 on every measure (pytrec_eval
    would leave it out of the mean).
    """
    named = measures(k)
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q, hits in zip(questions, rankings, strict=True):
        labels = level_labels(q, level)
        qrels[q.id] = {label: 1 for label in labels}
        units = ranked_units(hits, labels, level)
        # Scores by rank: no ties, so the library's tie order never matters.
        run[q.id] = {u: float(len(units) - i) for i, u in enumerate(units)}
    by_measure = {m: name for name, m in named.items()}
    per: dict[str, dict[str, float]] = {
        q.id: dict.fromkeys(named, 0.0) for q in questions
    }
    nonempty = {qid: docs for qid, docs in run.items() if docs}
    if nonempty:
        for metric in ir_measures.iter_calc(list(named.values()), qrels, nonempty):
            per[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    n = len(questions) or 1
    mean = {name: sum(v[name] for v in per.values()) / n for name in named}
    return mean, per
