"""`ragserve release ...`: the release registry on disk (the commands that
change a running graph's traffic are `graph.cli.live`).

    ragserve release create NAME --index IDX [--generator M] [--reranker R]
                            [--prompt-template ID] [--config FILE] [--parent P]
    ragserve release create NAME --from OLD --index IDX   (all else inherited)
    ragserve release list | show NAME | diff A B

They take `--registry DIR` (else `$RAGSERVE_REGISTRY`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any


class ReleaseCLIError(Exception):
    """One line for the user (printed as `ragserve: error: ...`)."""


def _registry(ns: argparse.Namespace) -> Any:
    from releases.registry import Registry

    return Registry(ns.registry)


def release_settings(args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model sections, per-node settings) a release pins, from a graph config."""
    models = args.models.model_dump(mode="json")
    nodes = args.deployments.model_dump(mode="json")
    nodes.pop("ingress", None)
    retrieval = args.retrieval.model_dump(
        mode="json",
        include={"top_k", "top_n", "rerank", "max_context_chars", "mode", "rrf_k"},
    )
    settings = {
        "retrieval": retrieval,
        "batching": args.batching.model_dump(mode="json"),
        "deployments": nodes,
        "fault": args.releases.fault.model_dump(mode="json"),
    }
    return models, settings


def cmd_release_create(ns: argparse.Namespace) -> int:
    from graph.cli.args import load_args
    from releases.create import build_release
    from releases.errors import ReleaseExistsError

    registry = _registry(ns)
    if registry.exists(ns.name):  # before hashing gigabytes
        raise ReleaseExistsError(
            f"release {ns.name!r} already exists in registry {registry.root}; "
            "releases are immutable: create one with a new name"
        )
    if ns.parent:
        registry.get(ns.parent)
    if ns.from_release:
        return _create_from(ns, registry)
    overrides = list(ns.set or [])
    if ns.generator:
        overrides.append(f"models.generator.model={ns.generator}")
    if ns.embedder:
        overrides.append(f"models.embedder.model={ns.embedder}")
    if ns.reranker:
        overrides += (
            ["models.reranker.kind=fusion", "models.reranker.model=null"]
            if ns.reranker == "fusion"
            else [
                "models.reranker.kind=cross-encoder",
                f"models.reranker.model={ns.reranker}",
            ]
        )
    ns.set = overrides
    args = load_args(ns)
    models, settings = release_settings(args)
    manifest = build_release(
        ns.name,
        ns.index,
        models,
        settings,
        ns.prompt_template or args.retrieval.prompt_template,
        parent=ns.parent,
        image_digest=ns.image_digest,
    )
    path = registry.add(manifest)
    audit(args, "release.create", None, {"name": manifest.name, "id": manifest.id})
    print(f"release {manifest.name} {manifest.id[:12]} -> {path}")
    return 0


_NOT_WITH_FROM = ("generator", "embedder", "reranker", "prompt_template", "config")


def _create_from(ns: argparse.Namespace, registry: Any) -> int:
    """`release create NEW --from OLD --index IDX`: OLD's models, template
    and settings over a new index; OLD is the parent unless --parent says."""
    from graph.cli.args import load_args
    from releases.create import build_release

    given = [f"--{n.replace('_', '-')}" for n in _NOT_WITH_FROM if getattr(ns, n)]
    if given or ns.set:
        raise ReleaseCLIError(
            f"--from inherits the models, template and config of "
            f"{ns.from_release!r}; drop {', '.join(given or ['--set'])} or "
            "create the release without --from"
        )
    old = registry.get(ns.from_release)
    models = {k: dict(old.artifacts[k].details) for k in _MODEL_KINDS}
    manifest = build_release(
        ns.name,
        ns.index,
        models,
        dict(old.artifacts["config"].details),
        str(old.artifacts["prompt_template"].details["id"]),
        parent=ns.parent or old.name,
        image_digest=ns.image_digest,
    )
    path = registry.add(manifest)
    audit(
        load_args(ns),
        "release.create",
        None,
        {"name": manifest.name, "id": manifest.id, "from": old.name},
    )
    print(f"release {manifest.name} {manifest.id[:12]} -> {path} (from {old.name})")
    return 0


_MODEL_KINDS = ("embedder", "reranker", "generator")


def audit(args: Any, action: str, before: Any, after: Any) -> None:
    from tenants.audit import AuditLog
    from tenants.config import resolve_audit_path

    log = AuditLog(resolve_audit_path(args.tenants.audit_log))
    try:
        log.admin(f"cli:{os.environ.get('USER', 'unknown')}", action, before, after)
    finally:
        log.close()


def cmd_release_list(ns: argparse.Namespace) -> int:
    releases = _registry(ns).list()
    if not releases:
        print(f"no releases in {_registry(ns).root}")
        return 0
    print(f"{'NAME':<20} {'ID':<12} {'CREATED':<25} {'PARENT':<12} GENERATOR / INDEX")
    for m in releases:
        gen = m.artifacts["generator"].identity
        idx = m.artifacts["index"].identity
        print(
            f"{m.name:<20} {m.id[:12]:<12} {m.created_at:<25} "
            f"{m.parent or '-':<12} {gen} / {idx}"
        )
    return 0


def cmd_release_show(ns: argparse.Namespace) -> int:
    m = _registry(ns).get(ns.name)
    if ns.json:
        print(m.model_dump_json(indent=2))
        return 0
    print(f"release {m.name}\n  id        {m.id}\n  created   {m.created_at}")
    print(f"  parent    {m.parent or '-'}")
    for kind, art in m.artifacts.items():
        check = (art.checksum or "unchecked (hub id)").removeprefix("sha256:")
        print(f"  {kind:<16} {art.identity}\n  {'':<16} sha256 {check}")
    docs = m.artifacts["index"].details.get("documents", {})
    print(f"  lineage: index of {len(docs)} documents")
    for doc_id, digest in sorted(docs.items()):
        print(f"    {doc_id}  {digest[:12]}")
    _print_evals(_registry(ns).evals(m.name))
    return 0


def _print_evals(results: dict[str, Any]) -> None:
    if not results:
        print("  quality: no stored eval (`ragserve eval --release NAME`)")
        return
    for key, r in results.items():
        s = r["set"]
        print(
            f"  quality on set {s['name']} ({s['questions']} questions, {key}, "
            f"{r['created_at']})"
        )
        print(
            "    "
            + "  ".join(f"{name} {value:.3f}" for name, value in r["headline"].items())
        )


def cmd_release_diff(ns: argparse.Namespace) -> int:
    from releases.manifest import diff

    registry = _registry(ns)
    a, b = registry.get(ns.a), registry.get(ns.b)
    lines = diff(a, b)
    print(f"{a.name} ({a.id[:12]}) -> {b.name} ({b.id[:12]})")
    for line in lines or ["(same artifacts)"]:
        print(f"  {line}")
    from releases.quality import deltas

    rows = deltas(registry.evals(a.name), registry.evals(b.name))
    if not rows:
        print("  quality: no eval on a common set")
    for key, metric, x, y, points in rows:
        print(f"  quality {key} {metric}: {x:.3f} -> {y:.3f} ({points:+.1f} points)")
    return 0


def registry_of(ns: argparse.Namespace, args: Any) -> Any:
    from releases.registry import Registry

    return Registry(ns.registry or args.releases.registry)


def registry_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry", help="registry folder (default $RAGSERVE_REGISTRY or cache)"
    )


def add_release_commands(sub: Any, add_config_flags: Any) -> Any:
    """Register `release`'s registry commands; returns its subparsers."""
    rel = sub.add_parser("release", help="versioned releases").add_subparsers(
        dest="release_command", required=True
    )
    create = rel.add_parser("create", help="pin every artifact as a new release")
    create.add_argument("name")
    create.add_argument("--index", required=True, help="index folder")
    create.add_argument(
        "--from",
        dest="from_release",
        metavar="RELEASE",
        help="inherit everything but the index from this release (its parent "
        "unless --parent)",
    )
    create.add_argument("--generator", help="generator model folder or hub id")
    create.add_argument("--embedder", help="embedder model (must match the index)")
    create.add_argument("--reranker", help="'fusion' or a cross-encoder model")
    create.add_argument("--prompt-template", help="prompt template id (rag-v1)")
    create.add_argument("--parent", help="the release this one derives from")
    create.add_argument("--image-digest", help="container image digest to record")
    registry_flag(create)
    add_config_flags(create)
    create.set_defaults(func=cmd_release_create)
    for name, func, help_ in (
        ("list", cmd_release_list, "releases in the registry"),
        ("show", cmd_release_show, "one release's artifacts and lineage"),
        ("diff", cmd_release_diff, "what changes from A to B"),
    ):
        p = rel.add_parser(name, help=help_)
        if name == "show":
            p.add_argument("name")
            p.add_argument("--json", action="store_true", help="the manifest")
        if name == "diff":
            p.add_argument("a")
            p.add_argument("b")
        registry_flag(p)
        p.set_defaults(func=func)
    return rel
