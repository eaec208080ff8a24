"""Batch settings come from one place; thread settings reach torch and vLLM."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from batching.config import BatchingConfig
from batching.queue import Queued, run_batch
from graph.config import ConfigError, RagServingArgs
from models.config import GeneratorConfig
from models.threads import (
    engine_thread_env,
    resolve_threads,
    torch_process_env,
    usable_cores,
    use_threads,
)
from models.vllm_engine import VLLMEngine


def test_batching_defaults_run_a_lone_request_at_once() -> None:
    cfg = RagServingArgs.load({}).batching
    assert isinstance(cfg, BatchingConfig)
    assert [n.batch_wait_timeout_s for n in (cfg.embedder, cfg.retriever)] == [0, 0]
    assert cfg.reranker.batch_wait_timeout_s == 0
    assert (cfg.embedder.max_batch_size, cfg.reranker.max_batch_size) == (32, 16)


def test_partial_node_merges_over_that_nodes_defaults() -> None:
    cfg = RagServingArgs.load({}, ["batching.embedder.enabled=false"]).batching
    assert cfg.embedder.enabled is False
    assert cfg.embedder.max_batch_size == 32  # the embedder's, not BatchConfig's 16
    with pytest.raises(ConfigError, match=r"batching\.embedder\.max_size"):
        RagServingArgs.load({}, ["batching.embedder.max_size=4"])


def test_all_off_turns_off_every_batched_node() -> None:
    off = BatchingConfig().all_off()
    assert not any(n.enabled for n in (off.embedder, off.retriever, off.reranker))
    assert off.embedder.max_batch_size == 32


def test_no_batch_size_is_written_in_the_deployments() -> None:
    # One source of truth: the decorators name no size; config sets it.
    from pathlib import Path

    source = (
        Path(__file__)
        .parents[2]
        .joinpath("graph", "serve", "deployments.py")
        .read_text()
    )
    assert "@serve.batch(" not in source
    assert source.count("@serve.batch") == 3


def test_run_batch_hands_each_caller_its_result_and_wait() -> None:
    items = [Queued.now(i) for i in range(3)]
    out = run_batch(items, lambda xs: [x * 10 for x in xs])
    assert [b.result for b in out] == [0, 10, 20]
    assert {b.info.size for b in out} == {3}
    assert all(b.info.wait_ms >= 0 for b in out)
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        run_batch(items, lambda xs: xs[:2])


def test_threads_default_to_every_usable_core() -> None:
    assert resolve_threads(None) == len(usable_cores()) >= 1
    assert resolve_threads(3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        resolve_threads(0)


def test_use_threads_sizes_torchs_pool() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_engine_env_binds_that_many_cores() -> None:
    cores = usable_cores()
    env = engine_thread_env(1)
    assert env == {
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "VLLM_CPU_OMP_THREADS_BIND": str(cores[0]),
    }
    every = engine_thread_env(None)
    assert every["OMP_NUM_THREADS"] == str(len(cores))
    assert every["VLLM_CPU_OMP_THREADS_BIND"].split(",") == [str(c) for c in cores]


def test_generator_env_wins_over_thread_settings() -> None:
    cpu = VLLMEngine(GeneratorConfig(threads=1, env={"OMP_NUM_THREADS": "7"}))
    env = cpu._engine_env(on_gpu=False)
    assert env["OMP_NUM_THREADS"] == "7"
    assert "VLLM_CPU_OMP_THREADS_BIND" in env
    # On GPU vLLM picks its own threads unless the config names a count.
    assert "OMP_NUM_THREADS" not in VLLMEngine(GeneratorConfig())._engine_env(True)


def test_the_engine_on_cpu_keeps_only_vllms_own_onednn_kernels() -> None:
    default = VLLMEngine(GeneratorConfig())
    assert default._engine_env(on_gpu=False)["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0"
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in default._engine_env(on_gpu=True)
    sized = VLLMEngine(GeneratorConfig(onednn_primitive_cache=64))
    assert sized._engine_env(False)["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    onednn = VLLMEngine(GeneratorConfig(onednn_primitive_cache=None))
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in onednn._engine_env(False)
    told = GeneratorConfig(env={"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "9"})
    assert VLLMEngine(told)._engine_env(False)["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "9"
    with pytest.raises(ValidationError):
        GeneratorConfig(onednn_primitive_cache=-1)


def test_torch_nodes_wait_passively_and_get_their_count() -> None:
    assert torch_process_env(None) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert torch_process_env(2)["OMP_NUM_THREADS"] == "2"


def test_replicas_get_the_thread_env() -> None:
    from graph.serve.builder import build_app

    app = build_app(
        RagServingArgs.load(
            {"layout": {"preset": "split"}}, ["models.embedder.threads=2"]
        )
    )
    # The ingress is bound to ({release: {node: deployment}}, cfg, releases).
    routes = app._bound_deployment._replica_config.init_args[0]
    (release,) = routes.values()
    nodes = [release[n] for n in ("embedder", "retriever", "reranker", "generator")]
    embedder = nodes[0]._bound_deployment
    assert embedder.name == "embedder"
    env = embedder._replica_config.ray_actor_options["runtime_env"]["env_vars"]
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    reranker = nodes[2]._bound_deployment
    env = reranker._replica_config.ray_actor_options["runtime_env"]["env_vars"]
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    # With every step in the ingress (`single`), the ingress process gets it.
    single = build_app(RagServingArgs.load({}, ["models.embedder.threads=2"]))
    actor = single._bound_deployment._replica_config.ray_actor_options
    assert actor["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"


def test_embed_with_counts_tokenizes_once_and_matches_embed(default_embedder) -> None:
    texts = ["How does ragserve batch requests?", "a", "Paris " * 40]
    vectors, counts = default_embedder.embed_with_counts(texts)
    assert vectors.shape == (3, default_embedder.dimension)
    assert abs(vectors - default_embedder.embed(texts)).max() < 1e-4
    assert counts == default_embedder.count_tokens(texts)
    many = [f"text {i}" for i in range(40)]  # above batch_size: through encode
    assert default_embedder.embed_with_counts(many)[1] == (
        default_embedder.count_tokens(many)
    )


def test_one_bad_input_fails_only_its_own_request(default_embedder) -> None:
    # A lone surrogate cannot be encoded by the real embedder's tokenizer: the
    # request carrying it fails, its batch-mates still get their vectors.
    items = [Queued.now(["ragserve batches"]), Queued.now(["a\ud800b"])]
    items.append(Queued.now(["and streams"]))

    def embed_flat(batch: list[list[str]]) -> list:
        # One forward pass over every text of the batch, as the deployment does.
        vectors = default_embedder.embed([t for texts in batch for t in texts])
        return [vectors[i : i + 1] for i in range(len(batch))]

    out = run_batch(items, embed_flat)
    assert {b.info.size for b in out} == {3}
    assert out[0].value().shape == (1, default_embedder.dimension)
    assert out[2].value().shape == (1, default_embedder.dimension)
    with pytest.raises(TypeError):  # what the tokenizer raises for it
        out[1].value()
    with pytest.raises(ZeroDivisionError):  # a batch of one still raises as before
        run_batch([Queued.now(1)], lambda xs: [1 / 0 for _ in xs])
