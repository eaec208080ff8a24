"""`ragserve index build` and `ragserve index update`: documents to index versions.

    ragserve index build --docs DIR --out DIR
    ragserve index update --index IDX --docs DIR [--out NEW] [--partial]
    ragserve index update --index IDX --delete DOC_ID [--delete ...]

An update writes a new version folder (default: a sibling `NAME-v<id12>`)
and leaves IDX as it was; only documents whose hash changed are chunked and
embedded again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graph.cli.args import CLIError, at_least, load_args
from graph.config import format_validation_error


def cmd_index_build(ns: argparse.Namespace) -> int:
    from graph.engines import make_embedder
    from retrieval.documents import load_documents
    from retrieval.index import build_index

    args = load_args(ns)
    build = args.retrieval.build
    updates = {
        k: v
        for k, v in {
            "index_type": ns.index_type,
            "chunk_size": ns.chunk_size,
            "chunk_overlap": ns.chunk_overlap,
        }.items()
        if v is not None
    }
    if updates:
        try:
            build = type(build).model_validate({**build.model_dump(), **updates})
        except ValidationError as exc:
            flags = {f"--{k.replace('_', '-')}": v for k, v in updates.items()}
            shown = ", ".join(f"{f} {v}" for f, v in flags.items())
            raise CLIError(f"{shown}: {format_validation_error(exc)}") from None
    docs = Path(ns.docs)
    if not docs.is_dir():
        raise CLIError(
            f"docs folder {docs} does not exist; pass --docs DIR with .md or .txt files"
        )
    started = time.perf_counter()
    load_documents(docs)  # bad documents fail before the model loads
    embedder = make_embedder(args.models.embedder)
    manifest = build_index(docs, Path(ns.out), embedder, build, progress=not ns.quiet)
    print(
        f"index: {manifest.chunk_count} chunks from {manifest.document_count} "
        f"documents ({manifest.index_type}, {manifest.embedder_model_id}, "
        f"{manifest.dimension}-d) version {(manifest.version or '')[:12]} "
        f"-> {ns.out} in {time.perf_counter() - started:.1f} s"
    )
    return 0


def cmd_index_update(ns: argparse.Namespace) -> int:
    from graph.engines import make_embedder
    from retrieval.manifest import read_manifest
    from retrieval.update import (
        DocumentChanges,
        NothingChangedError,
        changes_from_folder,
        update_index,
    )

    if not ns.docs and not ns.delete:
        raise CLIError("nothing to do: pass --docs DIR and/or --delete DOC_ID")
    if ns.partial and not ns.docs:
        raise CLIError("--partial only applies with --docs DIR")
    args = load_args(ns)
    parent = read_manifest(ns.index)  # a missing index fails before the model
    if ns.docs:
        if not Path(ns.docs).is_dir():
            raise CLIError(f"docs folder {ns.docs} does not exist; pass --docs DIR")
        changes = changes_from_folder(
            parent, ns.docs, remove_missing=not ns.partial, deletes=ns.delete or []
        )
    else:
        changes = DocumentChanges(deletes=list(dict.fromkeys(ns.delete)))
    started = time.perf_counter()
    embedder = make_embedder(args.models.embedder)
    try:
        manifest, out = update_index(
            ns.index,
            changes,
            embedder,
            ns.out,
            args.retrieval.build.embed_batch_size,
            progress=not ns.quiet,
        )
    except NothingChangedError as exc:
        print(str(exc))
        return 0
    c = manifest.changes
    assert c is not None  # an update always records its changes
    print(
        f"index version {(manifest.version or '')[:12]} -> {out}: "
        f"{len(c.added)} added, {len(c.replaced)} replaced, {len(c.removed)} "
        f"removed; {c.chunks_embedded} chunks embedded, {c.chunks_kept} kept, "
        f"{c.chunks_removed} dropped; {manifest.chunk_count} chunks in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


def add_index_commands(sub: Any, add_config_flags: Any) -> None:
    """Register `index build` and `index update` under the top-level parsers."""
    index = sub.add_parser("index", help="build document indexes").add_subparsers(
        dest="index_command", required=True
    )
    build = index.add_parser("build", help="documents -> chunks -> vectors -> FAISS")
    build.add_argument(
        "--docs", required=True, help="folder of .md/.txt/.rst/.html files"
    )
    build.add_argument(
        "--out", required=True, help="index folder to write (atomically)"
    )
    build.add_argument("--index-type", choices=["flat", "ivf", "hnsw"])
    build.add_argument("--chunk-size", type=at_least(1), help="words per chunk")
    build.add_argument(
        "--chunk-overlap",
        type=at_least(0),
        help="words shared by neighbouring chunks",
    )
    build.add_argument("--embedder", help="embedder model (default: all-MiniLM-L6-v2)")
    build.add_argument("-q", "--quiet", action="store_true")
    add_config_flags(build)
    build.set_defaults(func=cmd_index_build)

    update = index.add_parser(
        "update", help="a new index version: only changed documents re-embedded"
    )
    update.add_argument(
        "--index", required=True, help="the index version to start from"
    )
    update.add_argument(
        "--docs",
        help="the documents folder; its documents missing from it are removed "
        "from the index unless --partial",
    )
    update.add_argument(
        "--partial",
        action="store_true",
        help="--docs only adds and replaces documents",
    )
    update.add_argument(
        "--delete",
        action="append",
        metavar="DOC_ID",
        help="remove this document (its path relative to the docs folder; repeatable)",
    )
    update.add_argument(
        "--out", help="the new version's folder (default: a sibling NAME-v<id12>)"
    )
    update.add_argument("--embedder", help="embedder model (must match the index)")
    update.add_argument("-q", "--quiet", action="store_true")
    add_config_flags(update)
    update.set_defaults(func=cmd_index_update)
