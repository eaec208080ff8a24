"""VLLMEngine over a tiny random Llama: streaming, sampling, limits, aborts.

The offline environment (HF_HUB_OFFLINE, VLLM_ENABLE_V1_MULTIPROCESSING=0) is
set by tests/conftest.py before anything imports vLLM; `tiny_llama` comes from
there too.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from models.config import GeneratorConfig
from models.errors import EngineDeadError, InvalidRequestError, PromptTooLongError
from models.generation import Chunk, GenerationRequest, SamplingOptions
from models.vllm_engine import VLLMEngine

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_MODEL_LEN = 256
CHAT = [
    {"role": "system", "content": "Answer from the context."},
    {"role": "user", "content": "What does a reranker do?"},
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tiny_llama: Path) -> AsyncIterator[VLLMEngine]:
    eng = VLLMEngine(
        GeneratorConfig(
            model=str(tiny_llama),
            max_model_len=MAX_MODEL_LEN,
            max_num_seqs=4,
            kv_cache_memory_bytes=64 << 20,
        )
    )
    await eng.start()
    yield eng
    eng.shutdown()


def _request(
    request_id: str,
    *,
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
    **sampling: object,
) -> GenerationRequest:
    if prompt is None and messages is None:
        prompt = "The serving graph streams tokens"
    options = {"max_tokens": 12, "temperature": 0.0, **sampling}
    return GenerationRequest(
        request_id=request_id,
        prompt=prompt,
        messages=messages,
        sampling=SamplingOptions(**options),  # type: ignore[arg-type]
    )


async def _collect(engine: VLLMEngine, request: GenerationRequest) -> list[Chunk]:
    return [chunk async for chunk in engine.generate(request)]


def _text(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def _wait_idle(engine: VLLMEngine, timeout_s: float = 5.0) -> dict[str, object]:
    """Stats once the scheduler reports no running request (or at timeout)."""
    stats = await engine.stats()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while stats.get("num_running_requests") and (
        asyncio.get_running_loop().time() < deadline
    ):
        await asyncio.sleep(0.05)
        stats = await engine.stats()
    return stats


async def test_engine_reports_its_model_and_window(
    engine: VLLMEngine, tiny_llama: Path
) -> None:
    assert engine.model_id == tiny_llama.name
    assert engine.max_model_len == MAX_MODEL_LEN
    await engine.check_health()


async def test_streams_increments_then_a_final_chunk(engine: VLLMEngine) -> None:
    request = _request("stream", max_tokens=12)
    chunks = await _collect(engine, request)

    *increments, final = chunks
    assert len(increments) >= 3
    assert all(c.text and c.finish_reason is None for c in increments)
    assert final.finish_reason == "length"
    assert final.completion_tokens == 12
    assert final.prompt_tokens == engine.count_prompt_tokens(request)
    assert _text(chunks)


async def test_chat_messages_go_through_the_chat_template(
    engine: VLLMEngine, tiny_llama: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    rendered = tokenizer.apply_chat_template(
        CHAT, tokenize=False, add_generation_prompt=True
    )
    expected_prompt_tokens = len(tokenizer.encode(rendered, add_special_tokens=False))

    chunks = await _collect(engine, _request("chat", messages=CHAT, max_tokens=8))

    assert chunks[-1].prompt_tokens == expected_prompt_tokens
    assert chunks[-1].completion_tokens == 8
    assert _text(chunks)


async def test_plain_prompt_is_not_templated(engine: VLLMEngine) -> None:
    text = CHAT[-1]["content"]
    plain = _request("plain", prompt=text, max_tokens=4)
    chat = _request("plain-vs-chat", messages=[{"role": "user", "content": text}])

    chunks = await _collect(engine, plain)

    assert chunks[-1].prompt_tokens == engine.count_prompt_tokens(plain)
    assert engine.count_prompt_tokens(plain) < engine.count_prompt_tokens(chat)


async def test_seed_makes_sampling_reproducible(engine: VLLMEngine) -> None:
    def sampled(request_id: str, seed: int) -> GenerationRequest:
        return _request(request_id, max_tokens=16, temperature=1.0, seed=seed)

    first = _text(await _collect(engine, sampled("seed-a", 1234)))
    again = _text(await _collect(engine, sampled("seed-b", 1234)))
    other = _text(await _collect(engine, sampled("seed-c", 4321)))

    assert first == again
    assert first != other


async def test_stop_string_ends_the_completion_before_it(engine: VLLMEngine) -> None:
    full = _text(await _collect(engine, _request("stop-full", max_tokens=24)))
    # A piece of the greedy completion that first occurs after its start.
    stop = next(
        full[k : k + 3]
        for k in range(len(full) // 2, len(full) - 3)
        if full[k : k + 3].strip() and full.find(full[k : k + 3]) > 0
    )

    chunks = await _collect(engine, _request("stop-cut", max_tokens=24, stop=[stop]))

    assert chunks[-1].finish_reason == "stop"
    assert _text(chunks) == full[: full.find(stop)]
    assert chunks[-1].completion_tokens < 24


async def test_prompt_too_long_raises_before_any_chunk(engine: VLLMEngine) -> None:
    request = _request("too-long", max_tokens=MAX_MODEL_LEN)
    stream = engine.generate(request)

    with pytest.raises(PromptTooLongError) as raised:
        await stream.__anext__()

    assert raised.value.max_model_len == MAX_MODEL_LEN
    assert str(MAX_MODEL_LEN) in str(raised.value)
    assert raised.value.prompt_tokens == engine.count_prompt_tokens(request)
    assert (await engine.stats())["num_unfinished_requests"] == 0


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        ({"stop": [""]}, None),
        ({"top_p": 0.0}, "top_p"),
        ({"presence_penalty": 3}, None),
    ],
    ids=str,
)
async def test_values_vllm_refuses_are_an_invalid_request_not_a_crash(
    engine: VLLMEngine, sampling: dict[str, object], param: str | None
) -> None:
    """The graph validates first; this is the engine's own last line."""
    with pytest.raises(InvalidRequestError) as raised:
        await _collect(engine, _request("refused", **sampling))

    assert raised.value.param == param
    assert (await engine.stats())["num_unfinished_requests"] == 0


async def test_penalties_reach_the_engine(engine: VLLMEngine) -> None:
    chunks = await _collect(
        engine, _request("penalised", presence_penalty=1.5, frequency_penalty=-1.0)
    )

    assert chunks[-1].finish_reason == "length"


async def test_text_that_cannot_be_encoded_is_an_invalid_request(
    engine: VLLMEngine,
) -> None:
    with pytest.raises(InvalidRequestError):
        await _collect(engine, _request("surrogate", prompt="a\ud800b"))


async def test_token_ids_are_the_prompt_as_given(engine: VLLMEngine) -> None:
    text = _request("as-text", prompt="The serving graph streams tokens", max_tokens=6)
    ids = engine.render_prompt(text)
    as_ids = GenerationRequest(
        request_id="as-ids",
        prompt_token_ids=ids,
        sampling=SamplingOptions(max_tokens=6, temperature=0.0),
    )

    by_text, by_ids = await _collect(engine, text), await _collect(engine, as_ids)

    assert engine.render_prompt(as_ids) == ids
    assert by_ids[-1].prompt_tokens == len(ids)
    assert _text(by_ids) == _text(by_text)


async def test_a_token_id_past_the_vocabulary_is_an_invalid_request(
    engine: VLLMEngine,
) -> None:
    vocab = len(engine._require_started()._tokenizer)
    request = GenerationRequest(
        request_id="oov", prompt_token_ids=[1, vocab], sampling=SamplingOptions()
    )
    with pytest.raises(InvalidRequestError, match=f"token id {vocab} at position 1"):
        await _collect(engine, request)


async def test_closing_the_stream_early_aborts_the_request(
    engine: VLLMEngine,
) -> None:
    stream = engine.generate(_request("closed-early", max_tokens=200))
    received = [await stream.__anext__(), await stream.__anext__()]
    await stream.aclose()

    assert all(c.finish_reason is None for c in received)
    assert (await engine.stats())["num_unfinished_requests"] == 0
    assert (await _wait_idle(engine))["num_running_requests"] == 0


async def test_cancelling_the_consumer_aborts_the_request(engine: VLLMEngine) -> None:
    two_chunks = asyncio.Event()

    async def consume() -> None:
        seen = 0
        async for _ in engine.generate(_request("cancelled", max_tokens=200)):
            seen += 1
            if seen == 2:
                two_chunks.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two_chunks.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (await engine.stats())["num_unfinished_requests"] == 0
    assert (await _wait_idle(engine))["num_running_requests"] == 0


async def test_abort_by_id_ends_the_stream(engine: VLLMEngine) -> None:
    stream = engine.generate(_request("aborted", max_tokens=200))
    first = await stream.__anext__()
    await engine.abort("aborted")
    rest = [chunk async for chunk in stream]

    assert first.finish_reason is None
    assert rest[-1].finish_reason == "abort"
    assert rest[-1].completion_tokens < 200
    await engine.abort("no-such-request")  # unknown ids are ignored


async def test_final_chunk_carries_engine_timings(engine: VLLMEngine) -> None:
    final = (await _collect(engine, _request("timed", max_tokens=6)))[-1]

    assert "ttft_s" in final.metrics
    assert set(final.metrics) <= {"queue_s", "ttft_s", "prefill_s", "decode_s"}
    for name, value in final.metrics.items():
        assert isinstance(value, float) and math.isfinite(value), name
        assert value >= 0, name


async def test_stats_report_scheduler_gauges(engine: VLLMEngine) -> None:
    await _collect(engine, _request("gauges", max_tokens=2))

    stats = await _wait_idle(engine)

    assert stats["num_waiting_requests"] == 0
    assert 0.0 <= float(stats["kv_cache_usage"]) <= 1.0  # type: ignore[arg-type]


async def test_the_model_runs_in_a_child_process_with_a_kv_cache_vllm_sized(
    engine: VLLMEngine,
) -> None:
    """Where the generator's GPU figures are read: vLLM's EngineCore runs in a
    child of the engine's owner (so NVML is asked about the children), and
    the KV-cache size comes from vLLM itself."""
    from telemetry.gpu import child_pids

    stats = await engine.stats()
    titles = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in child_pids()]

    assert any(b"EngineCore" in title for title in titles), titles
    # 64 MiB of KV cache holds at least one full window of this tiny model.
    assert stats["kv_cache_blocks"] > 0
    assert stats["kv_cache_tokens"] >= MAX_MODEL_LEN


async def test_unstarted_engine_is_unhealthy() -> None:
    with pytest.raises(EngineDeadError):
        await VLLMEngine(GeneratorConfig()).check_health()
