"""The index benchmark's inputs: the synthetic corpus has the chunk count it
promises, and the keyword set names sections that hold their identifier."""

from __future__ import annotations

from load_tests.index_bench import synthetic_docs
from load_tests.keyword_set import keyword_questions
from retrieval.chunking import chunk_document
from retrieval.documents import load_documents
from retrieval.index import build_index
from tests.conftest import DOCS


def test_the_synthetic_corpus_is_one_chunk_per_section(tmp_path, default_embedder):
    docs = synthetic_docs(tmp_path / "docs", chunks=40)

    manifest = build_index(tmp_path / "docs", tmp_path / "idx", default_embedder)

    assert docs == 10
    assert manifest.chunk_count == 40


def test_each_keyword_question_labels_the_one_section_naming_its_key():
    questions = keyword_questions(DOCS, limit=15)
    sections: dict[str, str] = {}
    for doc in load_documents(DOCS):
        for chunk in chunk_document(doc, 1_000_000, 0):
            label = f"{doc.doc_id}#{chunk.title or ''}"
            sections[label] = sections.get(label, "") + chunk.text

    assert len(questions) == 15
    for q in questions:
        key = f"`{q['evidence']}`"
        holders = [label for label, text in sections.items() if key in text]
        assert holders == q["relevant"], q
        assert q["evidence"] in q["question"]
