"""The config a command runs with, from `--config`, `--set` and its own flags."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from graph.config import ConfigError, RagServingArgs


def at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` not below `low`."""

    def parse(raw: str) -> Any:
        value = kind(raw)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {raw}")
        return value

    parse.__name__ = kind.__name__  # "invalid int value" on a non-number
    return parse


#: The flags that set a config field, by the field they set.
FLAGS = {
    "retrieval.index_dir": "--index",
    "models.generator.model": "--model",
    "models.embedder.model": "--embedder",
    "server.host": "--host",
    "server.port": "--port",
    "tenants.db": "--tenants-db",
    "tenants.audit_log": "--audit-log",
    "releases.serve": "--release",
    "releases.registry": "--registry",
}


class CLIError(Exception):
    """A one-line message for the user (printed as `ragserve: error: ...`)."""


def load_args(ns: argparse.Namespace) -> RagServingArgs:
    """The config a command runs with: `--config`, `--set`, then its own flags.

    Raises:
        ConfigError: one line naming the field, and the flag that set it.
    """
    overrides = list(getattr(ns, "set", None) or [])
    given = len(overrides)
    if getattr(ns, "index", None) is not None:
        overrides.append(f"retrieval.index_dir={ns.index}")
    if getattr(ns, "model", None) is not None:
        overrides.append(f"models.generator.model={ns.model}")
    if getattr(ns, "embedder", None) is not None:
        overrides.append(f"models.embedder.model={ns.embedder}")
    if getattr(ns, "host", None) is not None:
        overrides.append(f"server.host={ns.host}")
    if getattr(ns, "port", None) is not None:
        overrides.append(f"server.port={ns.port}")
    if getattr(ns, "tenants_db", None) is not None:
        overrides.append(f"tenants.db={ns.tenants_db}")
    if getattr(ns, "audit_log", None) is not None:
        overrides.append(f"tenants.audit_log={ns.audit_log}")
    if getattr(ns, "release", None) is not None:
        overrides.append(f"releases.serve={json.dumps(ns.release)}")
    if getattr(ns, "registry", None) is not None:
        overrides.append(f"releases.registry={json.dumps(ns.registry)}")
    try:
        return RagServingArgs.load(ns.config, overrides)
    except ConfigError as exc:
        message = str(exc)
        for item in overrides[given:]:
            field = item.partition("=")[0]
            message = message.replace(f"{field}:", f"{FLAGS[field]} ({field}):")
        raise ConfigError(message) from None
