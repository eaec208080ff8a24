"""The release registry: one JSON manifest per release in a folder.

Knows where the folder is (`--registry DIR`, `$RAGSERVE_REGISTRY`, else
`<cache>/releases`), how to write a manifest atomically without ever
replacing one, and how to read them back, with each release's eval results
(`<name>.evals/`, keyed by question set); knows nothing of artifacts' content.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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

    def eval_dir(self, name: str) -> Path:
        """Where a release's eval results live: `<name>.evals/` beside it."""
        return self._path(name).with_suffix(".evals")

    def put_eval(self, name: str, result: dict[str, Any]) -> Path:
        """Store an eval result of release `name`, keyed by its question set's
        hash and top_k (a rerun on the same set replaces it), atomically.

        Raises:
            ReleaseNotFoundError: no such release.
        """
        self.get(name)
        folder = self.eval_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{eval_key(result)}.json"
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(result, indent=2).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return final

    def evals(self, name: str) -> dict[str, dict[str, Any]]:
        """A release's stored eval results by key (set hash and top_k)."""
        folder = self.eval_dir(name)
        if not folder.is_dir():
            return {}
        out = {}
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ReleaseError(
                    f"eval result {path} is unreadable ({type(exc).__name__})"
                ) from None
        return out

    def list(self) -> list[ReleaseManifest]:
        """Every release, oldest first."""
        return sorted(
            (self.get(n) for n in self.names()), key=lambda m: (m.created_at, m.name)
        )


def eval_key(result: dict[str, Any]) -> str:
    """`<first 16 of the set's sha256>-k<top_k>`: results compare only on the
    same questions and depth."""
    return f"{result['set']['sha256'][:16]}-k{result['top_k']}"


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
