"""The release registry: one JSON manifest per release in a folder.

Knows where the folder is (`--registry DIR`, `$RAGSERVE_REGISTRY`, else
`<cache>/releases`), how to write a manifest atomically without ever
replacing one, and how to read them back; knows nothing of artifacts' content.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from releases.errors import ReleaseError, ReleaseExistsError, ReleaseNotFoundError
from releases.manifest import ReleaseManifest, check_name

ENV_VAR = "RAGSERVE_REGISTRY"


def default_registry_dir() -> Path:
    """`$RAGSERVE_REGISTRY`, else `$RAGSERVE_CACHE_DIR/releases`, else
    `~/.cache/ragserve/releases`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("RAGSERVE_CACHE_DIR") or "~/.cache/ragserve"
    return Path(cache).expanduser() / "releases"


class Registry:
    """Release manifests in `root` (one `<name>.json` each)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_registry_dir()

    def _path(self, name: str) -> Path:
        try:
            check_name(name)
        except ValueError as exc:
            raise ReleaseError(str(exc)) from None
        return self.root / f"{name}.json"

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def add(self, manifest: ReleaseManifest) -> Path:
        """Write `manifest` atomically; an existing release is never replaced.

        Raises:
            ReleaseExistsError: the name is taken.
        """
        final = self._path(manifest.name)
        if final.exists():
            raise ReleaseExistsError(_exists_message(manifest.name, self.root))
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{manifest.name}.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write((manifest.model_dump_json(indent=2) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, final)  # fails if the name appeared meanwhile
            except FileExistsError:
                raise ReleaseExistsError(
                    _exists_message(manifest.name, self.root)
                ) from None
            _fsync_dir(self.root)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return final

    def get(self, name: str) -> ReleaseManifest:
        """Read one release.

        Raises:
            ReleaseNotFoundError: no such release (the message lists the known).
            ReleaseError: the file is not a valid manifest.
        """
        path = self._path(name)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise ReleaseNotFoundError(
                f"no release {name!r} in registry {self.root} (known: {known})"
            ) from None
        try:
            return ReleaseManifest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ReleaseError(
                f"release file {path} is not a valid manifest: {first['msg']}"
            ) from None

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.stem for p in self.root.glob("*.json") if not p.name.startswith(".")
        )

    def list(self) -> list[ReleaseManifest]:
        """Every release, oldest first."""
        return sorted(
            (self.get(n) for n in self.names()), key=lambda m: (m.created_at, m.name)
        )


def _exists_message(name: str, root: Path) -> str:
    return (
        f"release {name!r} already exists in registry {root}; releases are "
        "immutable: create one with a new name"
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
