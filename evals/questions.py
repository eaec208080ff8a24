"""Labelled question sets: JSONL or a BEIR folder, checked, with a content hash.

Knows the two formats, what a well-formed question is (a question, at least one
relevant label, an optional reference answer), and the label grammar: a
document id (`releases.md`), a section of one (`releases.md#The canary judge`,
the heading as the chunker records it) or a chunk id (an integer: a row of one
particular index). Knows nothing of indexes, models or metrics.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: Joins a document id and a section title in a label.
SECTION_SEP = "#"


class EvalSetError(ValueError):
    """A malformed question set; the message is one line naming file and line."""


class QuestionRecord(BaseModel):
    """One line of a JSONL set."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Stable id; default: q<line number>.")
    question: str = Field(min_length=1, description="The question as a user asks.")
    relevant: list[str | int] = Field(
        min_length=1,
        description="What answers it: document ids, 'doc#Section' or chunk ids.",
    )
    answer: str | None = Field(None, description="A reference answer, optional.")
    evidence: str | None = Field(
        None,
        description="A verbatim phrase of a relevant document or section that "
        "answers the question (checked against the docs by the set's test).",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is blank")
        return value.strip()

    @field_validator("relevant")
    @classmethod
    def _labels(cls, value: list[str | int]) -> list[str | int]:
        for label in value:
            if isinstance(label, bool) or (isinstance(label, int) and label < 0):
                raise ValueError(f"chunk id {label!r} is not a row number")
            if isinstance(label, str) and not label.split(SECTION_SEP, 1)[0].strip():
                raise ValueError(f"label {label!r} names no document")
        return value


@dataclass(frozen=True)
class Question:
    """A checked question; `relevant` holds labels as strings (chunk ids as
    `chunk:N`)."""

    id: str
    question: str
    relevant: tuple[str, ...]
    answer: str | None = None
    evidence: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "relevant": list(self.relevant),
            "answer": self.answer,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class QuestionSet:
    """A named list of questions and the sha256 of their canonical JSON (so a
    reformatted file keeps its hash, an edited label does not)."""

    name: str
    source: str
    questions: tuple[Question, ...]
    sha256: str

    @property
    def has_sections(self) -> bool:
        return any(SECTION_SEP in label for q in self.questions for label in q.relevant)

    @property
    def has_answers(self) -> bool:
        return any(q.answer for q in self.questions)


def chunk_label(chunk_id: int) -> str:
    return f"chunk:{chunk_id}"


def _make_set(name: str, source: str, questions: list[Question]) -> QuestionSet:
    canonical = json.dumps(
        [q.to_dict() for q in questions], sort_keys=True, ensure_ascii=False
    ).encode()
    return QuestionSet(
        name, source, tuple(questions), hashlib.sha256(canonical).hexdigest()
    )


def load_set(path: str | Path) -> QuestionSet:
    """A JSONL file or a BEIR folder (`queries.jsonl`, `qrels/test.tsv`).

    Raises:
        EvalSetError: missing, empty or malformed, naming the file and line.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return load_beir(p)
    if not p.is_file():
        raise EvalSetError(
            f"question set {p} does not exist; pass a .jsonl file or a BEIR folder"
        )
    return load_jsonl(p)


def load_jsonl(path: Path) -> QuestionSet:
    """One JSON object per line: `{"question", "relevant": [...], "answer"?}`."""
    questions: list[Question] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_line(path, n, line)
        qid = record.id or f"q{n}"
        if qid in seen:
            raise EvalSetError(f"{path}:{n}: id {qid!r} repeats line {seen[qid]}")
        seen[qid] = n
        questions.append(
            Question(
                qid,
                record.question,
                tuple(
                    chunk_label(x) if isinstance(x, int) else x.strip()
                    for x in record.relevant
                ),
                record.answer,
                record.evidence,
            )
        )
    if not questions:
        raise EvalSetError(f"{path}: no questions (one JSON object per line)")
    return _make_set(path.stem, str(path), questions)


def _parse_line(path: Path, n: int, line: str) -> QuestionRecord:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalSetError(f"{path}:{n}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise EvalSetError(f"{path}:{n}: expected a JSON object, got {data!r:.40}")
    try:
        return QuestionRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "line"
        raise EvalSetError(f"{path}:{n}: {where}: {first['msg']}") from None


def load_beir(folder: Path) -> QuestionSet:
    """A BEIR folder: `queries.jsonl` (`_id`, `text`), `qrels/test.tsv`
    (query-id, corpus-id, score; a header line) and `corpus.jsonl`; questions
    without a positive judgement are skipped, as BEIR does. Corpus ids are the
    labels: index the corpus one file per document, named after its id."""
    queries_path, qrels_path = folder / "queries.jsonl", folder / "qrels" / "test.tsv"
    for needed in (queries_path, qrels_path, folder / "corpus.jsonl"):
        if not needed.is_file():
            raise EvalSetError(f"BEIR folder {folder}: {needed.name} is missing")
    texts: dict[str, str] = {}
    for n, line in enumerate(queries_path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            texts[str(row["_id"])] = str(row["text"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalSetError(
                f'{queries_path}:{n}: expected {{"_id": ..., "text": ...}}'
            ) from None
    relevant: dict[str, list[str]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if n == 1 and row and not row[-1].strip().lstrip("-").isdigit():
                continue  # the header
            if len(row) != 3 or not row[2].strip().lstrip("-").isdigit():
                raise EvalSetError(
                    f"{qrels_path}:{n}: expected query-id<TAB>corpus-id<TAB>score"
                )
            if row[0] not in texts:
                raise EvalSetError(f"{qrels_path}:{n}: unknown query id {row[0]!r}")
            if int(row[2]) > 0:
                relevant.setdefault(row[0], []).append(row[1])
    questions = [
        Question(qid, texts[qid], tuple(labels))
        for qid, labels in relevant.items()
        if texts[qid]
    ]
    if not questions:
        raise EvalSetError(f"{qrels_path}: no query has a positive judgement")
    return _make_set(folder.name, str(folder), questions)
