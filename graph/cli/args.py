"""The config a command runs with, from `--config`, `--set` and its own flags."""

from __future__ import annotations

import argparse
import json

from graph.config import RagServingArgs


class CLIError(Exception):
    """A one-line message for the user (printed as `ragserve: error: ...`)."""


def load_args(ns: argparse.Namespace) -> RagServingArgs:
    """The config a command runs with: `--config`, `--set`, then its own flags."""
    overrides = list(getattr(ns, "set", None) or [])
    if getattr(ns, "index", None):
        overrides.append(f"retrieval.index_dir={ns.index}")
    if getattr(ns, "model", None):
        overrides.append(f"models.generator.model={ns.model}")
    if getattr(ns, "embedder", None):
        overrides.append(f"models.embedder.model={ns.embedder}")
    if getattr(ns, "host", None):
        overrides.append(f"server.host={ns.host}")
    if getattr(ns, "port", None):
        overrides.append(f"server.port={ns.port}")
    if getattr(ns, "tenants_db", None):
        overrides.append(f"tenants.db={ns.tenants_db}")
    if getattr(ns, "audit_log", None):
        overrides.append(f"tenants.audit_log={ns.audit_log}")
    if getattr(ns, "release", None):
        overrides.append(f"releases.serve={json.dumps(ns.release)}")
    if getattr(ns, "registry", None):
        overrides.append(f"releases.registry={json.dumps(ns.registry)}")
    return RagServingArgs.load(ns.config, overrides)
