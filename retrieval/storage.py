"""An index folder's files on disk: durable writes, atomic install, chunks, checksums.

Knows how to write a file and a folder through to disk, swap a finished
folder into place so no half-written index is ever seen, the chunks.jsonl
format and file checksums; knows nothing of FAISS, embedders or what the
manifest says.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from retrieval.chunking import TextChunk
from retrieval.errors import RetrievalError, index_corrupt
from retrieval.manifest import CHUNKS_FILE, MANIFEST_FILE


def check_target(out: Path) -> None:
    """Refuse an output path that is a file or a non-empty folder but no index."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RetrievalError(
            f"{out} exists and is not a folder; pass a folder path as the index output"
        )
    if (out / MANIFEST_FILE).is_file():
        return
    if any(out.iterdir()):
        raise RetrievalError(
            f"{out} is a non-empty folder that is not a ragserve index (no "
            f"{MANIFEST_FILE}); refusing to overwrite it: pass a new or empty "
            "folder as the index output"
        )


def install(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` folder to `out`, replacing an index there."""
    check_target(out)
    if out.exists() and (out / MANIFEST_FILE).is_file():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    if out.exists():
        out.rmdir()
    os.rename(tmp, out)
    fsync_dir(out.parent)


def write_chunks(
    path: Path, chunks: list[TextChunk], ids: list[int] | None = None
) -> None:
    """Write `chunks` to `path` as chunks.jsonl, line i being chunk i under
    the id `ids[i]` (default: i)."""
    ids = list(range(len(chunks))) if ids is None else ids
    lines = [
        json.dumps(
            {
                "chunk_id": i,
                "doc_id": c.doc_id,
                "index": c.index,
                "title": c.title,
                "text": c.text,
            },
            ensure_ascii=False,
        )
        + "\n"
        for i, c in zip(ids, chunks, strict=True)
    ]
    write_synced(path, "".join(lines).encode("utf-8"))


def read_chunks(path: Path, folder: Path) -> tuple[list[int], list[TextChunk]]:
    """Read the chunks.jsonl at `path` of the index `folder`: (ids, chunks)."""
    ids, chunks = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                ids.append(int(record["chunk_id"]))
                chunks.append(
                    TextChunk(
                        doc_id=record["doc_id"],
                        text=record["text"],
                        title=record["title"],
                        index=record["index"],
                    )
                )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise index_corrupt(folder, f"{CHUNKS_FILE} cannot be parsed") from exc
    if len(set(ids)) != len(ids):
        raise index_corrupt(folder, f"{CHUNKS_FILE} repeats a chunk_id")
    return ids, chunks


def write_synced(path: Path, data: bytes) -> None:
    """Write `data` to `path` and flush it to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_tree(root: Path) -> None:
    """Flush every file under `root` and every folder's entries to disk."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    """Flush the folder `path`'s entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
