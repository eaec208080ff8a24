"""The `ragserve` command line.

    ragserve models prepare             convert the default SmolLM2 once (cached)
    ragserve index build --docs D --out O
    ragserve index update --index I --docs D [--out N] [--delete ID]
    ragserve ask "question" [--index O]
    ragserve serve [--config FILE]
    ragserve config show [--config FILE]
    ragserve eval (--release NAME | --index IDX) [--set FILE] [--out FILE]

Every failure a user can fix prints one line, `ragserve: error: ...`, and
exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

from graph.cli.args import CLIError, at_least, load_args
from graph.cli.eval import add_eval_command
from graph.cli.index import add_index_commands
from graph.cli.live import add_live_commands
from graph.cli.releases import ReleaseCLIError, add_release_commands
from graph.cli.tenants import register as register_tenants
from graph.config import ConfigError, RagServingArgs


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming it (`ragserve: error:
    argument --port: invalid int value: 'x'`), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            2,
            f"ragserve: error: {self.prog.removeprefix('ragserve ')}: "
            f"{message} (see --help)\n",
        )


def _offline_defaults() -> None:
    # The defaults ship inside packages; never reach for a hub unless asked.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_models_prepare(ns: argparse.Namespace) -> int:
    from models.smollm2 import ensure_smollm2

    path = ensure_smollm2(progress=not ns.quiet)
    print(path)
    return 0


def cmd_ask(ns: argparse.Namespace) -> int:
    # The answer is the output here; engine start-up chatter is not.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    question = ns.question.strip()
    if not question:
        raise CLIError('the question is empty; pass it in quotes: ragserve ask "..."')
    args = load_args(ns)
    return asyncio.run(_ask(args, question, ns))


async def _ask(args: RagServingArgs, question: str, ns: argparse.Namespace) -> int:
    from graph.local import LocalGraph
    from graph.pipeline import RetrievalOptions
    from models.generation import SamplingOptions

    t0 = time.perf_counter()
    graph = LocalGraph(args)
    try:
        await graph.start()
        ready_s = time.perf_counter() - t0
        cfg = args.retrieval
        options = RetrievalOptions(
            enabled=not ns.no_retrieval,
            top_k=ns.top_k or cfg.top_k,
            top_n=ns.top_n or cfg.top_n,
            rerank=cfg.rerank and not ns.no_rerank,
        )
        sampling = SamplingOptions(
            max_tokens=ns.max_tokens or args.models.generator.default_max_tokens,
            temperature=(
                args.models.generator.temperature
                if ns.temperature is None
                else ns.temperature
            ),
            seed=ns.seed,
            repetition_penalty=args.models.generator.repetition_penalty,
        )
        t1 = time.perf_counter()
        answer = await graph.pipeline.answer(
            [{"role": "user", "content": question}],
            sampling,
            f"ask-{uuid.uuid4().hex}",
            options,
        )
        first_token_s: float | None = None
        tokens = 0
        async for chunk in answer.stream:
            if first_token_s is None and chunk.text:
                first_token_s = time.perf_counter() - t1
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            tokens = chunk.completion_tokens or tokens
        total_s = time.perf_counter() - t1
        print()
        if answer.citations:
            print("\nSources:")
            for i, hit in enumerate(answer.citations, start=1):
                title = f" — {hit.title}" if hit.title else ""
                print(f"  [{i}] {hit.doc_id}{title} (score {hit.score:.3f})")
        decode_s = total_s - (first_token_s or 0.0)
        rate = (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0
        print(
            f"\n[engine ready {ready_s:.1f} s | "
            f"first token {first_token_s or 0.0:.2f} s | "
            f"{tokens} tokens in {total_s:.2f} s | {rate:.1f} tok/s]",
            file=sys.stderr,
        )
    finally:
        graph.shutdown()
    return 0


def cmd_serve(ns: argparse.Namespace) -> int:
    from graph.cli.server import run_until_signal
    from graph.routing.served import load_served
    from models.resolve import resolve_generator_path
    from retrieval.manifest import read_manifest

    args = load_args(ns)
    # Fail fast, before Ray starts, on what the replicas would trip over.
    for release in load_served(args):
        index = read_manifest(release.args.retrieval.index_dir)
        mode = release.args.retrieval.mode
        if mode != "dense" and not index.has_bm25:
            raise CLIError(
                f"release {release.name!r} asks for retrieval.mode {mode} but its "
                f"index {release.args.retrieval.index_dir} has no BM25 index "
                f"(format {index.format_version}); rebuild it with `ragserve "
                "index build` or `ragserve index update`, or use mode dense"
            )
        resolve_generator_path(release.args.models.generator.model)
    run_until_signal(args, address=ns.address)
    return 0


def cmd_trace(ns: argparse.Namespace) -> int:
    from graph.cli.trace_view import fetch_trace, parse_trace, render_waterfall

    trace = fetch_trace(ns.jaeger, ns.trace_id)
    print(render_waterfall(parse_trace(trace)))
    return 0


def cmd_config_show(ns: argparse.Namespace) -> int:
    from graph.layout import Placement

    args = load_args(ns)
    print(args.to_yaml(), end="")
    groups = " ".join(
        "[" + ", ".join(g) + "]" for g in Placement.of(args.layout).describe()
    )
    print(f"# deployments (step groups) this config runs: {groups}")
    return 0


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (RagServingArgs schema)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set retrieval.top_k=20 (repeatable)",
    )


def _add_ask(sub: Any) -> None:
    """`ragserve ask`."""
    ask = sub.add_parser("ask", help="answer one question in this process (no Ray)")
    ask.add_argument("question")
    ask.add_argument("--index", help="index folder (default: retrieval.index_dir)")
    ask.add_argument("--model", help="generator model folder or hub id")
    ask.add_argument("--embedder", help="embedder model (must match the index)")
    ask.add_argument("--max-tokens", type=at_least(1))
    ask.add_argument(
        "--temperature",
        type=at_least(0.0, float),
        help="default: models.generator.temperature",
    )
    ask.add_argument("--seed", type=int)
    ask.add_argument("--top-k", type=at_least(1))
    ask.add_argument("--top-n", type=at_least(1))
    ask.add_argument("--no-rerank", action="store_true")
    ask.add_argument("--no-retrieval", action="store_true")
    _add_config_flags(ask)
    ask.set_defaults(func=cmd_ask)


def _add_serve(sub: Any) -> None:
    """`ragserve serve`."""
    serve = sub.add_parser("serve", help="run the graph on Ray Serve until Ctrl-C")
    serve.add_argument("--index", help="index folder (default: retrieval.index_dir)")
    serve.add_argument("--model", help="generator model folder or hub id")
    serve.add_argument("--embedder", help="embedder model (must match the index)")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument(
        "--address",
        type=_ray_address,
        help="join an existing Ray cluster instead (auto, HOST:PORT or "
        "ray://HOST:PORT)",
    )
    serve.add_argument(
        "--release",
        action="append",
        metavar="NAME",
        help="serve this release from the registry (repeatable; the first "
        "takes 100%% unless releases.weights says otherwise)",
    )
    serve.add_argument(
        "--registry", help="registry folder (default $RAGSERVE_REGISTRY or cache)"
    )
    _add_config_flags(serve)
    serve.set_defaults(func=cmd_serve)


def _ray_address(raw: str) -> str:
    """What `ray.init(address=...)` takes: auto, HOST:PORT, ray://HOST:PORT."""
    if raw == "auto":
        return raw
    host, _, port = raw.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not auto, HOST:PORT or ray://HOST:PORT"
        )
    return raw


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ragserve", description="RAG serving graph on Ray Serve.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="prepare the default models").add_subparsers(
        dest="models_command", required=True
    )
    prepare = models.add_parser(
        "prepare", help="convert the bundled SmolLM2 GGUF once (cached)"
    )
    prepare.add_argument("-q", "--quiet", action="store_true")
    prepare.set_defaults(func=cmd_models_prepare)

    add_index_commands(sub, _add_config_flags)
    _add_ask(sub)
    _add_serve(sub)

    tr = sub.add_parser("trace", help="print one request's trace from Jaeger")
    tr.add_argument("trace_id", help="the x-trace-id a response carried")
    tr.add_argument(
        "--jaeger",
        default=os.environ.get("RAGSERVE_JAEGER_URL", "http://127.0.0.1:16686"),
        help="Jaeger query URL (default $RAGSERVE_JAEGER_URL or http://127.0.0.1:16686)",
    )
    tr.set_defaults(func=cmd_trace)

    config = sub.add_parser("config", help="inspect configuration").add_subparsers(
        dest="config_command", required=True
    )
    show = config.add_parser("show", help="print the resolved config as YAML")
    _add_config_flags(show)
    show.set_defaults(func=cmd_config_show)
    register_tenants(sub)
    add_live_commands(
        sub, add_release_commands(sub, _add_config_flags), _add_config_flags
    )
    add_eval_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from graph.cli.env import EnvError, check_environment

    _offline_defaults()
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        check_environment()  # before any command starts anything
    except EnvError as exc:
        print(f"ragserve: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if ns.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not ns.verbose:
        # bm25s sets its logger to DEBUG when it is imported (lazily, later):
        # a filter survives that, a level does not.
        logging.getLogger("bm25s").addFilter(
            lambda record: record.levelno >= logging.WARNING
        )
    from evals.http_target import HttpTargetError
    from evals.questions import EvalSetError
    from graph.cli.haproxy import HAProxyUnavailable
    from graph.cli.trace_view import TraceError
    from models.errors import ModelError
    from releases.errors import ReleaseError
    from retrieval.errors import RetrievalError

    try:
        return int(ns.func(ns))
    except (
        CLIError,
        ConfigError,
        ModelError,
        RetrievalError,
        TraceError,
        ReleaseError,
        ReleaseCLIError,
        HAProxyUnavailable,
        EvalSetError,
        HttpTargetError,
    ) as exc:
        print(f"ragserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragserve: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
