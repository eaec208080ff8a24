"""Run a question set through a target and gather the results as plain data.

Knows the order of an eval (each question retrieved in the dense order and
reranked, then answered for the first `answers` questions), what a target
must offer (`EvalTarget`) and the shape of the result (a JSON-ready dict with
the set's hash); knows nothing of how a target reaches the pipeline (in this
process, `graph.evaluate`; over HTTP, `evals.http_target`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from evals.grounding import cited_indices, content_words, groundedness, is_refusal
from evals.metrics import Level, level_labels, ranked_units, retrieval_metrics
from evals.questions import Question, QuestionSet
from evals.report import headline
from retrieval.types import Hit

FORMAT_VERSION = 1
#: Units kept per question and order in the per-question record.
SHOWN = 10


class EvalTarget(Protocol):
    """A pipeline to evaluate."""

    rerank_enabled: bool

    def describe(self) -> dict[str, Any]:
        """What is evaluated (release, index, reranker...), for the result."""
        ...

    async def retrieve(self, query: str, k: int, rerank: bool) -> list[Hit]:
        """The top `k` chunks, in the dense order or reranked."""
        ...

    async def answer(self, query: str) -> tuple[str, list[Hit]]:
        """The generated answer and the chunks its prompt held, in order."""
        ...

    def step_times(self) -> dict[str, list[float]]:
        """Milliseconds per call of each step seen so far (may be empty)."""
        ...


def levels(qset: QuestionSet) -> list[Level]:
    return ["doc", "section"] if qset.has_sections else ["doc"]


async def run_eval(
    target: EvalTarget, qset: QuestionSet, k: int, answers: int = 0
) -> dict[str, Any]:
    """Evaluate `target` on `qset` with `k` candidates per question; generate
    for the first `answers` questions (0: retrieval only)."""
    orders = ["dense", "reranked"] if target.rerank_enabled else ["dense"]
    rankings: dict[str, list[list[Hit]]] = {o: [] for o in orders}
    request_ms: dict[str, list[float]] = {o: [] for o in orders}
    for q in qset.questions:
        for order in orders:
            t0 = time.perf_counter()
            hits = await target.retrieve(q.question, k, order == "reranked")
            request_ms[order].append((time.perf_counter() - t0) * 1000)
            rankings[order].append(hits)
    retrieval: dict[str, Any] = {}
    per_question: list[dict[str, Any]] = [
        {"id": q.id, "question": q.question, "relevant": list(q.relevant)}
        for q in qset.questions
    ]
    for order in orders:
        retrieval[order] = {}
        for level in levels(qset):
            mean, per = retrieval_metrics(qset.questions, rankings[order], level, k)
            retrieval[order][level] = mean
            for record, q, hits in zip(
                per_question, qset.questions, rankings[order], strict=True
            ):
                units = ranked_units(hits, level_labels(q, level), level)[:SHOWN]
                record.setdefault(order, {})[level] = {
                    "metrics": per[q.id],
                    "ranked": units,
                }
    answered = await _answers(target, qset, answers, per_question)
    latency = {f"{o}_request": _summary(v) for o, v in request_ms.items()}
    latency.update({s: _summary(v) for s, v in target.step_times().items()})
    result: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "set": {
            "name": qset.name,
            "source": qset.source,
            "sha256": qset.sha256,
            "questions": len(qset.questions),
        },
        "target": target.describe(),
        "top_k": k,
        "retrieval": retrieval,
        "answers": answered,
        "latency_ms": latency,
        "per_question": per_question,
    }
    result["headline"] = headline(result)
    return result


async def _answers(
    target: EvalTarget,
    qset: QuestionSet,
    count: int,
    per_question: list[dict[str, Any]],
) -> dict[str, Any] | None:
    if count <= 0:
        return None
    records = []
    for q, record in zip(qset.questions[:count], per_question, strict=False):
        text, citations = await target.answer(q.question)
        record["answer"] = answer_checks(q, text, citations, levels(qset))
        records.append(record["answer"])
    return summarize_answers(records)


def answer_checks(
    q: Question, text: str, citations: Sequence[Hit], lvls: Sequence[Level]
) -> dict[str, Any]:
    """One answer's checks: refusal, citations and their relevance per level,
    groundedness in what it cites, overlap with the reference answer."""
    cited = [citations[n - 1] for n in cited_indices(text, len(citations))]
    precision: dict[str, float | None] = {}
    for level in lvls:
        labels = level_labels(q, level)
        good = sum(1 for h in cited if ranked_units([h], labels, level)[0] in labels)
        precision[level] = good / len(cited) if cited else None
    sources = [h.text for h in (cited or citations)]
    grounding = groundedness(text, sources)
    reference = None
    if q.answer:
        want = set(content_words(q.answer))
        have = set(content_words(text))
        reference = len(want & have) / len(want) if want else None
    return {
        "text": text,
        "chars": len(text),
        "empty": not text.strip(),
        "refusal": is_refusal(text),
        "cited": [h.doc_id + (f"#{h.title}" if h.title else "") for h in cited],
        "citation_precision": precision,
        "groundedness": grounding.score,
        "sentences_checked": grounding.sentences,
        "reference_recall": reference,
    }


def summarize_answers(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    levels_seen = sorted({lvl for r in records for lvl in r["citation_precision"]})
    return {
        "questions": n,
        "empty_rate": sum(r["empty"] for r in records) / n,
        "refusal_rate": sum(r["refusal"] for r in records) / n,
        "uncited_rate": sum(not r["cited"] for r in records) / n,
        "citation_precision": {
            lvl: mean([r["citation_precision"].get(lvl) for r in records])
            for lvl in levels_seen
        },
        "groundedness": mean([r["groundedness"] for r in records]),
        "reference_recall": mean([r["reference_recall"] for r in records]),
        "mean_chars": sum(r["chars"] for r in records) / n,
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "mean": round(float(arr.mean()), 3),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
    }
