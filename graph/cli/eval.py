"""`ragserve eval`: a labelled question set through a release's or an index's
pipeline, in this process or against a running graph; a table, a JSON file,
and the result stored beside the release in the registry.

    ragserve eval (--release NAME | --index IDX [--config FILE]) [--set FILE]
                  [--top-k K] [--out FILE] [--url URL] [--answers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import evals
from evals.questions import QuestionSet, load_set
from graph.cli.args import at_least

#: The bundled set over the bundled docs/.
BUNDLED_SET = Path(evals.__file__).parent / "sets" / "docs.jsonl"


def _release_config(ns: argparse.Namespace) -> tuple[Any, Any]:
    """(graph config, release manifest or None) the eval runs with."""
    from graph.cli.args import load_args
    from graph.routing.served import release_args
    from releases.registry import Registry

    base = argparse.Namespace(
        config=ns.config, set=None, index=ns.index, registry=ns.registry
    )
    args = load_args(base)
    if not ns.release:
        return args, None
    manifest = Registry(ns.registry or args.releases.registry).get(ns.release)
    if not ns.url:
        manifest.verify()
    return release_args(args, manifest).args, manifest


async def _run(ns: argparse.Namespace, qset: QuestionSet, args: Any) -> dict[str, Any]:
    from evals.http_target import HttpTarget
    from evals.runner import run_eval

    k = ns.top_k or args.retrieval.top_k
    if ns.url:
        http = HttpTarget(
            ns.url, ns.release, args.retrieval.rerank, max_tokens=ns.max_tokens
        )
        try:
            return await run_eval(http, qset, k, ns.answers)
        finally:
            await http.aclose()
    from graph.evaluate import LocalTarget

    local = LocalTarget(args, ns.release, max_tokens=ns.max_tokens)
    try:
        return await run_eval(local, qset, k, ns.answers)
    finally:
        local.shutdown()


def cmd_eval(ns: argparse.Namespace) -> int:
    from evals.report import render_table, write_json
    from graph.cli.releases import ReleaseCLIError
    from releases.registry import Registry

    if not (ns.release or ns.index or ns.url):
        raise ReleaseCLIError(
            "name what to evaluate: --release NAME or --index DIR (or --url URL)"
        )
    if ns.answers:
        # The table is the output here; engine start-up chatter is not.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    qset = load_set(ns.set or BUNDLED_SET)  # a bad set fails before any model
    args, manifest = _release_config(ns)
    result = asyncio.run(_run(ns, qset, args))
    if manifest is not None:
        result["target"]["release_id"] = manifest.id
    print(render_table(result))
    if ns.out:
        print(f"wrote {write_json(ns.out, result)}")
    if manifest is not None and not ns.no_store:
        registry = Registry(ns.registry or args.releases.registry)
        path = registry.put_eval(manifest.name, result)
        print(f"stored with release {manifest.name}: {path}")
    if ns.json:
        print(json.dumps(result, indent=2))
    return 0


def add_eval_command(sub: Any) -> None:
    """Register `eval` under the top-level subparsers."""
    p = sub.add_parser(
        "eval", help="answer quality of a release or an index on a question set"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--release", help="a release from the registry")
    what.add_argument("--index", help="an index folder (with --config's models)")
    p.add_argument("--config", help="YAML config file (RagServingArgs schema)")
    p.add_argument(
        "--set",
        help="question set: a .jsonl file or a BEIR folder (default: the bundled "
        "set over docs/)",
    )
    p.add_argument(
        "--top-k",
        type=at_least(1),
        help="candidates per question (default retrieval.top_k)",
    )
    p.add_argument("--out", help="write the full result as JSON here")
    p.add_argument(
        "--url", help="evaluate a running graph over HTTP instead of in-process"
    )
    p.add_argument(
        "--answers",
        type=at_least(0),
        default=0,
        metavar="N",
        help="also generate answers for the first N questions (slow on CPU)",
    )
    p.add_argument("--max-tokens", type=at_least(1), default=128, help="per answer")
    p.add_argument("--registry", help="registry folder (default $RAGSERVE_REGISTRY)")
    p.add_argument(
        "--no-store", action="store_true", help="do not store it with the release"
    )
    p.add_argument("--json", action="store_true", help="also print the JSON")
    p.set_defaults(func=cmd_eval)
