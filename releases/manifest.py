"""The release manifest: name, time, parent and every artifact, content-addressed.

Knows the manifest's shape, its id (sha256 of the canonical JSON of its
artifacts, so two releases with the same artifacts share an id whatever their
names), verification against the disk and the diff of two releases; knows
nothing of where manifests are stored or how they are served.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from releases.artifacts import KINDS, Artifact, canonical_json, sha256_bytes
from releases.artifacts import verify_artifact as _verify_one

FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"release name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def release_id(artifacts: dict[str, Artifact]) -> str:
    """sha256 of the canonical JSON of the artifacts."""
    data = {k: a.model_dump(mode="json") for k, a in sorted(artifacts.items())}
    return sha256_bytes(canonical_json(data)).removeprefix("sha256:")


class ReleaseManifest(BaseModel):
    """Everything that decides an answer, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = Field(FORMAT_VERSION, description="Manifest format.")
    name: str = Field(description="Unique name in the registry.")
    id: str = Field(description="sha256 of the canonical JSON of `artifacts`.")
    created_at: str = Field(description="UTC creation time, ISO 8601.")
    parent: str | None = Field(None, description="Release this one derives from.")
    artifacts: dict[str, Artifact] = Field(description="Artifacts by kind.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @model_validator(mode="after")
    def _content_addressed(self) -> ReleaseManifest:
        missing = [k for k in KINDS if k not in self.artifacts]
        if missing:
            raise ValueError(f"artifacts: missing {', '.join(missing)}")
        expected = release_id(self.artifacts)
        if self.id != expected:
            raise ValueError(
                f"id ({self.id[:12]}) does not match the artifacts' hash "
                f"({expected[:12]}): the manifest was edited"
            )
        return self

    @classmethod
    def create(
        cls, name: str, artifacts: dict[str, Artifact], parent: str | None = None
    ) -> ReleaseManifest:
        return cls(
            name=name,
            id=release_id(artifacts),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            parent=parent,
            artifacts=artifacts,
        )

    @property
    def fingerprint(self) -> str:
        """OpenAI's `system_fingerprint` for answers from this release."""
        return f"{self.name}@{self.id[:12]}"

    @property
    def settings(self) -> dict[str, Any]:
        """The per-node graph config the release serves with."""
        return dict(self.artifacts["config"].details)

    def verify(self) -> None:
        """Check every artifact against the disk.

        Raises:
            ArtifactMismatchError: naming the first missing or changed artifact.
        """
        for kind in KINDS:
            if kind != "runtime":
                _verify_one(self.name, self.artifacts[kind])


def diff(a: ReleaseManifest, b: ReleaseManifest) -> list[str]:
    """What changes from release `a` to release `b`, one line per difference."""
    lines: list[str] = []
    for kind in KINDS:
        x, y = a.artifacts[kind], b.artifacts[kind]
        if x == y:
            continue
        if x.identity != y.identity:
            lines.append(f"{kind}: {x.identity} -> {y.identity}")
        elif x.checksum != y.checksum:
            lines.append(
                f"{kind}: {x.identity} content {_short(x.checksum)} -> "
                f"{_short(y.checksum)}"
            )
        if kind == "index":
            lines.extend(_documents_diff(x.details, y.details))
        else:
            lines.extend(
                f"{kind}.{line}" for line in _dict_diff(x.details, y.details, "")
            )
    return lines


def _short(checksum: str | None) -> str:
    return (checksum or "unchecked").removeprefix("sha256:")[:12]


def _documents_diff(x: dict[str, Any], y: dict[str, Any]) -> list[str]:
    old, new = x.get("documents", {}), y.get("documents", {})
    out = [f"index: + document {d}" for d in sorted(set(new) - set(old))]
    out += [f"index: - document {d}" for d in sorted(set(old) - set(new))]
    out += [
        f"index: ~ document {d}"
        for d in sorted(set(old) & set(new))
        if old[d] != new[d]
    ]
    if x.get("embedder_model_id") != y.get("embedder_model_id"):
        out.append(
            f"index: embedder {x.get('embedder_model_id')} -> "
            f"{y.get('embedder_model_id')}"
        )
    return out


def _dict_diff(x: Any, y: Any, prefix: str) -> list[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        out: list[str] = []
        for key in sorted(set(x) | set(y), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in x:
                out.append(f"{path}: (unset) -> {y[key]!r}")
            elif key not in y:
                out.append(f"{path}: {x[key]!r} -> (unset)")
            else:
                out.extend(_dict_diff(x[key], y[key], path))
        return out
    return [] if x == y else [f"{prefix}: {x!r} -> {y!r}"]
