"""The environment variables ragserve reads, each with the check its value must
pass, run once before any command starts anything.

Knows every `RAGSERVE_*` name and what a valid value looks like; the modules
that read them (tenants.config, releases.registry, graph.serve.heap, ...)
keep reading them where they are needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class EnvError(Exception):
    """An environment variable with a value ragserve cannot use; one line."""


def _number(value: str) -> None:
    try:
        float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None


def _http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise ValueError("has a port that is not a number") from None


def _db_url(value: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(value)
    except ArgumentError:
        raise ValueError(
            "must be a SQLAlchemy database URL such as sqlite:////path/tenants.db"
        ) from None


def _folder(value: str) -> None:
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"names {path}, which is a file, not a folder")


def _file(value: str) -> None:
    path = Path(value).expanduser()
    if path.is_dir():
        raise ValueError(f"names {path}, which is a folder, not a file")


def _keys(value: str) -> None:
    if any(not k.strip() for k in value.split(",")) and value.strip(", "):
        raise ValueError("must be comma-separated keys without empty entries")


def _digest(value: str) -> None:
    algo, _, hex_part = value.partition(":")
    if not algo or not hex_part or any(c not in "0123456789abcdef" for c in hex_part):
        raise ValueError("must be an image digest such as sha256:<hex>")


def _anything(value: str) -> None:
    return None


@dataclass(frozen=True)
class EnvVar:
    name: str
    description: str
    check: Callable[[str], None]


#: Every variable ragserve reads (tests/unit/test_bad_config.py checks that
#: the source reads no other `RAGSERVE_*` name).
ENV_VARS = (
    EnvVar("RAGSERVE_API_KEY", "the key `ragserve traffic`/`release` send", _anything),
    EnvVar("RAGSERVE_API_KEYS", "more server.api_keys, comma-separated", _keys),
    EnvVar("RAGSERVE_AUDIT_LOG", "the audit log file (tenants.audit_log)", _file),
    EnvVar("RAGSERVE_CACHE_DIR", "models, indexes and the registry", _folder),
    EnvVar("RAGSERVE_DATA_DIR", "the tenant store and audit log", _folder),
    EnvVar("RAGSERVE_IMAGE_DIGEST", "the image a release records", _digest),
    EnvVar("RAGSERVE_JAEGER_URL", "`ragserve trace`'s Jaeger", _http_url),
    EnvVar("RAGSERVE_MALLOC_TRIM_S", "replica heap trim interval", _number),
    EnvVar("RAGSERVE_REGISTRY", "the release registry folder", _folder),
    EnvVar("RAGSERVE_TENANTS_DB", "the tenant store (tenants.db)", _db_url),
    EnvVar("RAGSERVE_URL", "the graph `ragserve traffic` talks to", _http_url),
)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise `EnvError` naming the first variable whose value is unusable
    (an empty value counts as unset, as the readers treat it)."""
    env = os.environ if environ is None else environ
    for var in ENV_VARS:
        value = env.get(var.name, "")
        if not value.strip():
            continue
        try:
            var.check(value)
        except ValueError as exc:
            raise EnvError(f"{var.name}={value!r} {exc}") from None
