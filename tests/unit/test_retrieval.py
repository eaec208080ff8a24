"""Documents, chunking and the FAISS index, with real FAISS and the real embedder."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from retrieval.chunking import TextChunk, chunk_document
from retrieval.config import IndexBuildConfig
from retrieval.documents import Document, load_documents
from retrieval.index import (
    DocumentError,
    FaissRetriever,
    IndexMismatchError,
    IndexNotFoundError,
    RetrievalError,
    build_index,
    read_manifest,
)
from tests.conftest import DOCS
from tests.factories_retrieval import CachingEmbedder, FailingEmbedder, write_tree

TINY_DOCS = {
    "install.md": "# Installing\n\nRun make install to create the virtual "
    "environment with pip.\n\n## GPU\n\nOn CUDA machines install faiss-gpu.\n",
    "cooking.md": "# Pancakes\n\nMix flour, eggs and milk, then fry the batter "
    "in butter until golden.\n",
    "weather.txt": "Tomorrow will be sunny in the morning with rain showers in "
    "the afternoon.\n",
}


@pytest.fixture(scope="module")
def embedder(default_embedder):
    """The default embedder, remembering vectors so rebuilds are cheap."""
    return CachingEmbedder(default_embedder)


@pytest.fixture(scope="module")
def tiny_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tiny-docs"), TINY_DOCS)


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_docs, embedder) -> Path:
    out = tmp_path_factory.mktemp("tiny-index") / "index"
    build_index(tiny_docs, out, embedder, progress=False)
    return out


def load(index_dir: Path, embedder) -> FaissRetriever:
    return FaissRetriever.load(index_dir, embedder.model_id, embedder.dimension)


def ask(retriever: FaissRetriever, embedder, question: str, k: int = 3):
    return retriever.search(embedder.embed([question]), k)[0]


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


# --- index: build and search -------------------------------------------------


@pytest.mark.parametrize(
    ("question", "doc_id"),
    [
        ("How does ragserve batch requests?", "batching.md"),
        ("How do I run ragserve on Kubernetes?", "kubernetes.md"),
        ("How do I find a slow request in Jaeger?", "observability.md"),
        ("What does an error response look like?", "api.md"),
    ],
)
def test_docs_index_answers_questions_from_the_right_page(
    docs_index, default_embedder, question, doc_id
):
    retriever = load(docs_index, default_embedder)

    hits = ask(retriever, default_embedder, question)

    assert hits[0].doc_id == doc_id
    assert hits[0].title
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_manifest_describes_the_docs_index(docs_index, default_embedder):
    manifest = read_manifest(docs_index)
    doc_files = sorted(p.name for p in DOCS.glob("*.md"))

    assert manifest.embedder_model_id == default_embedder.model_id
    assert manifest.dimension == default_embedder.dimension == 384
    assert manifest.metric == "inner_product"
    assert manifest.index_type == "flat"
    assert (manifest.chunk_size, manifest.chunk_overlap) == (200, 40)
    assert [d.doc_id for d in manifest.documents] == doc_files
    assert manifest.document_count == len(doc_files)
    for entry in manifest.documents:
        raw = (DOCS / entry.doc_id).read_bytes()
        assert entry.sha256 == hashlib.sha256(raw).hexdigest()
        assert entry.chunks >= 1
    assert manifest.chunk_count == sum(d.chunks for d in manifest.documents)
    assert set(manifest.files) == {"index.faiss", "chunks.jsonl"}
    for name, digest in manifest.files.items():
        assert hashlib.sha256((docs_index / name).read_bytes()).hexdigest() == digest
    on_disk = json.loads((docs_index / "manifest.json").read_text())
    assert on_disk["chunk_count"] == manifest.chunk_count
    assert len(load(docs_index, default_embedder)) == manifest.chunk_count


def test_search_returns_at_most_k_hits_per_query_best_first(tiny_index, embedder):
    retriever = load(tiny_index, embedder)
    questions = ["How do I install it?", "How do I make pancakes?"]

    batched = retriever.search(embedder.embed(questions), k=100)

    assert len(batched) == 2
    assert all(len(hits) == len(retriever) for hits in batched)
    assert batched[0][0].doc_id == "install.md"
    assert batched[1][0].doc_id == "cooking.md"
    single = retriever.search(embedder.embed(questions[1:]), k=1)
    assert single[0][0] == batched[1][0]
    assert retriever.search(np.zeros((0, embedder.dimension), np.float32), 3) == []


@pytest.mark.parametrize("k", [0, -1])
def test_search_rejects_k_below_one(tiny_index, embedder, k):
    retriever = load(tiny_index, embedder)

    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.search(embedder.embed(["install"]), k)


def test_search_rejects_vectors_of_another_dimension(tiny_index, embedder):
    retriever = load(tiny_index, embedder)

    with pytest.raises(ValueError, match="384"):
        retriever.search(np.ones((1, 768), np.float32), 3)


@pytest.fixture(scope="module")
def many_docs(tmp_path_factory) -> Path:
    """A corpus of 240 distinct one-sentence documents: enough to train IVF."""
    animals = ["fox", "owl", "whale", "beetle", "horse", "salmon"]
    cities = ["Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi"]
    hobbies = ["paints murals", "repairs bicycles", "bakes bread", "studies stars"]
    files = {}
    for i, (animal, city, hobby) in enumerate(
        (a, c, h) for a in animals for c in cities for h in hobbies
    ):
        for variant, when in enumerate(("every morning", "on weekends")):
            files[f"d{i:03d}-{variant}.txt"] = f"The {animal} in {city} {hobby} {when}."
    return write_tree(tmp_path_factory.mktemp("many-docs"), files)


@pytest.mark.parametrize(
    ("config", "index_type"),
    [
        (IndexBuildConfig(index_type="flat"), "flat"),
        (IndexBuildConfig(index_type="hnsw", hnsw_m=16), "hnsw"),
        (IndexBuildConfig(index_type="ivf", ivf_nprobe=1), "ivf"),
        (IndexBuildConfig(index_type="ivf", ivf_nlist=4, ivf_nprobe=1), "ivf"),
    ],
    ids=["flat", "hnsw", "ivf-auto-nlist", "ivf-nlist-4"],
)
def test_every_index_type_finds_each_chunk_by_its_own_text(
    tmp_path, many_docs, embedder, config, index_type
):
    manifest = build_index(
        many_docs, tmp_path / "index", embedder, config, progress=False
    )
    retriever = load(tmp_path / "index", embedder)
    chunks = [json.loads(line) for line in (tmp_path / "index/chunks.jsonl").open()]
    sample = chunks[::23]

    results = retriever.search(embedder.embed([c["text"] for c in sample]), k=3)

    assert manifest.index_type == index_type
    assert manifest.chunk_count == len(retriever) == 240
    if index_type == "ivf":
        assert manifest.ivf_nlist == (config.ivf_nlist or 240 // 39)
    for chunk, hits in zip(sample, results, strict=True):
        assert hits[0].chunk_id == chunk["chunk_id"]
        assert hits[0].text == chunk["text"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_ivf_on_too_small_a_corpus_falls_back_to_flat_with_a_warning(
    tmp_path, tiny_docs, embedder, caplog
):
    with caplog.at_level(logging.WARNING, logger="retrieval.index"):
        manifest = build_index(
            tiny_docs, tmp_path / "index", embedder, IndexBuildConfig(index_type="ivf")
        )

    assert manifest.index_type == "flat"
    assert "flat" in caplog.text
    hits = ask(load(tmp_path / "index", embedder), embedder, "pancake batter")
    assert hits[0].doc_id == "cooking.md"


def _faiss_sees_a_gpu() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@pytest.mark.skipif(_faiss_sees_a_gpu(), reason="a GPU is present")
def test_use_gpu_always_without_a_gpu_is_refused(tmp_path, tiny_docs, embedder):
    config = IndexBuildConfig(use_gpu="always")

    with pytest.raises(RetrievalError, match="faiss-gpu"):
        build_index(tiny_docs, tmp_path / "index", embedder, config, progress=False)

    assert os.listdir(tmp_path) == []


# --- index: loading checks ---------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "dimension"),
    [("BAAI/bge-small-en-v1.5", 384), (None, 768)],
    ids=["other-model", "other-dimension"],
)
def test_loading_with_another_embedder_is_refused_naming_the_fix(
    tiny_index, embedder, model_id, dimension
):
    model_id = model_id or embedder.model_id

    with pytest.raises(IndexMismatchError) as info:
        FaissRetriever.load(tiny_index, model_id, dimension)

    message = str(info.value)
    assert embedder.model_id in message
    assert f"{dimension}-d" in message
    assert "ragserve index build --docs" in message
    assert f"models.embedder.model to {embedder.model_id!r}" in message


@pytest.mark.parametrize("make_dir", [False, True], ids=["missing", "empty"])
def test_loading_where_there_is_no_index_says_how_to_build_one(
    tmp_path, embedder, make_dir
):
    target = tmp_path / "index"
    if make_dir:
        target.mkdir()

    with pytest.raises(IndexNotFoundError, match="run `ragserve index build --docs"):
        load(target, embedder)
    with pytest.raises(IndexNotFoundError):
        read_manifest(target)


def _append_to_chunks(index: Path) -> None:
    with open(index / "chunks.jsonl", "a") as f:
        f.write('{"injected": true}\n')


def _flip_a_vector_byte(index: Path) -> None:
    data = bytearray((index / "index.faiss").read_bytes())
    data[-5] ^= 0xFF
    (index / "index.faiss").write_bytes(bytes(data))


def _delete_index_file(index: Path) -> None:
    (index / "index.faiss").unlink()


def _garble_manifest(index: Path) -> None:
    (index / "manifest.json").write_text("{not json")


def _future_manifest(index: Path) -> None:
    data = json.loads((index / "manifest.json").read_text())
    data["format_version"] = 99
    (index / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_append_to_chunks, "chunks.jsonl does not match its checksum"),
        (_flip_a_vector_byte, "index.faiss does not match its checksum"),
        (_delete_index_file, "index.faiss is missing"),
        (_garble_manifest, "manifest"),
        (_future_manifest, "format 99"),
    ],
    ids=["chunks-edited", "index-bitflip", "index-deleted", "manifest-garbled", "v99"],
)
def test_damaged_index_is_refused_with_a_rebuild_hint(
    tmp_path, tiny_index, embedder, damage, expected
):
    copy = Path(shutil.copytree(tiny_index, tmp_path / "index"))
    damage(copy)

    with pytest.raises(RetrievalError) as info:
        load(copy, embedder)

    assert expected in str(info.value)
    assert "ragserve index build" in str(info.value)


# --- index: atomic writes ----------------------------------------------------


def test_crash_mid_build_leaves_no_index_and_no_temporary_folder(
    tmp_path, tiny_docs, embedder
):
    failing = FailingEmbedder(embedder, fail_on_call=2)
    config = IndexBuildConfig(embed_batch_size=1)

    with pytest.raises(RuntimeError, match="simulated"):
        build_index(tiny_docs, tmp_path / "index", failing, config, progress=False)

    assert failing.calls == 2
    assert os.listdir(tmp_path) == []


def test_crash_while_rebuilding_keeps_the_existing_index_usable(
    tmp_path, tiny_docs, embedder
):
    out = tmp_path / "index"
    build_index(tiny_docs, out, embedder, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    failing = FailingEmbedder(embedder, fail_on_call=2)

    with pytest.raises(RuntimeError, match="simulated"):
        build_index(
            tiny_docs,
            out,
            failing,
            IndexBuildConfig(embed_batch_size=1),
            progress=False,
        )

    assert os.listdir(tmp_path) == ["index"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    hits = ask(load(out, embedder), embedder, "How do I install it?")
    assert hits[0].doc_id == "install.md"


def test_rebuilding_replaces_the_index_and_cleans_up(tmp_path, tiny_docs, embedder):
    out = tmp_path / "index"
    build_index(tiny_docs, out, embedder, progress=False)
    new_docs = write_tree(tmp_path / "new-docs", {"only.md": "# Only\n\nsolo doc\n"})

    manifest = build_index(new_docs, out, embedder, progress=False)

    assert sorted(os.listdir(tmp_path)) == ["index", "new-docs"]
    assert [d.doc_id for d in read_manifest(out).documents] == ["only.md"]
    assert manifest == read_manifest(out)
    assert len(load(out, embedder)) == 1


def test_build_into_an_empty_folder_succeeds(tmp_path, tiny_docs, embedder):
    (tmp_path / "index").mkdir()

    build_index(tiny_docs, tmp_path / "index", embedder, progress=False)

    assert (
        len(load(tmp_path / "index", embedder))
        == read_manifest(tmp_path / "index").chunk_count
    )


def test_build_refuses_to_overwrite_a_folder_that_is_not_an_index(
    tmp_path, tiny_docs, embedder
):
    out = write_tree(tmp_path / "precious", {"thesis.tex": "years of work"})

    with pytest.raises(RetrievalError, match="refusing to overwrite"):
        build_index(tiny_docs, out, embedder, progress=False)

    assert os.listdir(tmp_path) == ["precious"]
    assert (out / "thesis.tex").read_text() == "years of work"


def test_build_refuses_a_file_as_output(tmp_path, tiny_docs, embedder):
    target = write_tree(tmp_path, {"out.txt": "keep"}) / "out.txt"

    with pytest.raises(RetrievalError, match="not a folder"):
        build_index(tiny_docs, target, embedder, progress=False)

    assert target.read_text() == "keep"
