"""Documents and chunking, and the index build settings that bound them."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from retrieval.chunking import TextChunk, chunk_document
from retrieval.config import IndexBuildConfig
from retrieval.documents import Document, load_documents
from retrieval.errors import DocumentError
from tests.conftest import DOCS
from tests.factories_retrieval import write_tree

# --- documents ---------------------------------------------------------------


def test_load_documents_reads_supported_files_recursively_in_order(tmp_path):
    files: dict[str, str | bytes] = {
        "b/guide.rst": "Guide\n=====\n\nText.\n",
        "a.md": "# A\n\nalpha\n",
        "b/notes.txt": "plain notes\n",
        "c.markdown": "gamma\n",
        "d.html": "<p>delta</p>",
        "e.htm": "<p>epsilon</p>",
        "bom.md": "\ufeffwith a byte order mark\n",
        ".hidden.md": "hidden\n",
        ".git/inside.md": "hidden folder\n",
        "script.py": "print('not a document')\n",
        "image.png": b"\x89PNG\x00\x00",
    }
    write_tree(tmp_path, files)

    docs = load_documents(tmp_path)

    assert [d.doc_id for d in docs] == [
        "a.md",
        "b/guide.rst",
        "b/notes.txt",
        "bom.md",
        "c.markdown",
        "d.html",
        "e.htm",
    ]
    for doc in docs:
        raw = (tmp_path / doc.doc_id).read_bytes()
        assert doc.sha256 == hashlib.sha256(raw).hexdigest()
    by_id = {d.doc_id: d for d in docs}
    assert by_id["bom.md"].text == "with a byte order mark\n"
    assert by_id["e.htm"].text.strip() == "epsilon"


def test_html_is_reduced_to_visible_text_with_headings_as_titles(tmp_path):
    write_tree(
        tmp_path,
        {
            "page.html": "<html><head><title>Tab title</title>"
            "<style>p { color: red }</style></head><body>"
            "<h2>Install &amp; run</h2><p>Use <b>pip</b>&nbsp;install.</p>"
            "<script>var secret = 1;</script><ul><li>one</li><li>two</li></ul>"
            "</body></html>"
        },
    )

    (doc,) = load_documents(tmp_path)

    assert "<" not in doc.text
    for hidden in ("color: red", "secret", "Tab title"):
        assert hidden not in doc.text
    assert "Install & run" in doc.text
    assert "Use pip\xa0install." in doc.text
    chunks = chunk_document(doc, 50, 10)
    assert [c.title for c in chunks] == ["Install & run"]


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope"


def _a_file(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"doc.md": "text"}) / "doc.md"


def _no_supported(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"code.py": "x = 1", ".hidden.md": "hidden"})


def _binary(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"ok.md": "fine", "blob.md": b"PK\x03\x04\x00\x00"})


def _latin1(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"legacy.txt": "caf\xe9".encode("latin-1")})


def _dangling_link(tmp_path: Path) -> Path:
    write_tree(tmp_path, {"ok.md": "fine"})
    (tmp_path / "gone.md").symlink_to(tmp_path / "deleted.md")
    return tmp_path


def _all_empty(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"a.md": "", "b.txt": "  \n\t\n"})


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing, ["nope", "does not exist"]),
        (_a_file, ["doc.md", "not a folder"]),
        (_no_supported, ["no .md", ".txt", "add documents"]),
        (_binary, ["blob.md", "binary"]),
        (_latin1, ["legacy.txt", "not UTF-8", "convert it"]),
        (_dangling_link, ["gone.md", "cannot read"]),
        (_all_empty, ["empty", "2 document files"]),
    ],
    ids=["missing", "file", "unsupported", "binary", "latin1", "unreadable", "empty"],
)
def test_bad_docs_folder_raises_document_error_naming_the_problem(
    tmp_path, make, expected
):
    target = make(tmp_path)

    with pytest.raises(DocumentError) as info:
        load_documents(target)

    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads files regardless of their permissions",
)
def test_file_without_read_permission_raises_document_error(tmp_path):
    write_tree(tmp_path, {"secret.md": "text"})
    (tmp_path / "secret.md").chmod(0)
    try:
        with pytest.raises(DocumentError, match=r"secret\.md"):
            load_documents(tmp_path)
    finally:
        (tmp_path / "secret.md").chmod(0o644)


def test_empty_files_are_skipped_with_a_warning(tmp_path, caplog):
    write_tree(tmp_path, {"empty.md": "\n\n", "full.md": "# Full\n\ncontent\n"})

    with caplog.at_level(logging.WARNING, logger="retrieval.documents"):
        docs = load_documents(tmp_path)

    assert [d.doc_id for d in docs] == ["full.md"]
    assert "empty.md" in caplog.text


# --- chunking ----------------------------------------------------------------


def words_of(chunk: TextChunk) -> list[str]:
    return chunk.text.split()


def test_long_text_is_windowed_with_the_configured_overlap():
    words = [f"w{i}" for i in range(500)]
    doc = Document("long.txt", " ".join(words), "x")

    chunks = chunk_document(doc, chunk_size=100, chunk_overlap=20)

    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(len(words_of(c)) <= 100 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert words_of(before)[-20:] == words_of(after)[:20]
    assert words_of(chunks[0])[0] == "w0"
    assert words_of(chunks[-1])[-1] == "w499"
    covered = [w for c in chunks for w in words_of(c)]
    assert set(covered) == set(words)


def test_windows_end_at_paragraph_breaks_when_one_is_near():
    first = " ".join(f"a{i}" for i in range(70))
    second = " ".join(f"b{i}" for i in range(70))
    doc = Document("doc.md", f"{first}\n\n{second}\n", "x")

    chunks = chunk_document(doc, chunk_size=100, chunk_overlap=10)

    assert chunks[0].text == first
    assert words_of(chunks[1])[:10] == first.split()[-10:]
    assert words_of(chunks[-1])[-1] == "b69"


def test_markdown_chunks_carry_the_nearest_heading_as_title():
    text = (
        "Preamble before any heading.\n\n"
        "# Guide\n\n"
        "## Install\n\n"
        "Run the installer.\n\n"
        "```bash\n# this comment is not a heading\nmake install\n```\n\n"
        "Serving\n-------\n\n"
        "Start the server.\n"
    )

    chunks = chunk_document(Document("guide.md", text, "x"), 50, 10)

    assert [c.title for c in chunks] == [None, "Install", "Serving"]
    # A heading without text of its own is kept as context for the next one.
    assert chunks[1].text.startswith("# Guide\n\n## Install")
    assert "make install" in chunks[1].text
    assert "Start the server." in chunks[2].text


def test_rst_titles_become_chunk_titles():
    text = "=====\nTitle\n=====\n\nIntro.\n\nUsage\n-----\n\nCall it.\n"

    chunks = chunk_document(Document("doc.rst", text, "x"), 50, 10)

    assert [(c.title, words_of(c)[-1]) for c in chunks] == [
        ("Title", "Intro."),
        ("Usage", "it."),
    ]


def test_plain_text_has_no_titles():
    doc = Document("notes.txt", "# not a heading in a txt file\n\nbody\n", "x")

    assert [c.title for c in chunk_document(doc, 50, 10)] == [None]


def test_chunking_is_deterministic():
    doc = load_documents(DOCS)[0]

    assert chunk_document(doc, 64, 16) == chunk_document(doc, 64, 16)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_chunk_sizes_out_of_range_are_rejected(size, overlap):
    with pytest.raises(ValueError, match="chunk"):
        chunk_document(Document("a.txt", "some words", "x"), size, overlap)


def test_config_rejects_overlap_not_below_size_naming_both_fields():
    with pytest.raises(ValidationError) as info:
        IndexBuildConfig(chunk_size=64, chunk_overlap=64)

    message = str(info.value)
    assert "chunk_overlap (64)" in message
    assert "chunk_size (64)" in message


@pytest.mark.parametrize(
    "fields",
    [{"chunk_size": 8, "chunk_overlap": 0}, {"index_type": "lsh"}, {"chunk_szie": 100}],
    ids=["too-small", "unknown-type", "typo"],
)
def test_config_rejects_invalid_or_unknown_fields(fields):
    with pytest.raises(ValidationError):
        IndexBuildConfig(**fields)
