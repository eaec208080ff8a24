"""The generation interface: a request in, a stream of text increments out.

Knows the request/chunk types and the engine contract; knows nothing of vLLM
(see `models.vllm_engine`) or of HTTP.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingOptions:
    """Sampling knobs that the OpenAI protocol exposes."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Keep generating past the end-of-sequence token (fixed-length benchmarks).
    ignore_eos: bool = False
    # >1 discourages repeating tokens (small models loop under greedy decoding).
    repetition_penalty: float = 1.0
    # OpenAI's additive penalties, in [-2, 2].
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass
class GenerationRequest:
    """One generation request.

    Exactly one of `messages` (chat; the engine applies the model's chat
    template), `prompt` (plain completion) or `prompt_token_ids` (a plain
    completion already tokenized by the client) is set.
    """

    request_id: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    # W3C trace context (`traceparent`, `tracestate`) for the engine's own spans.
    trace_headers: dict[str, str] | None = None
    # Lower goes first where the engine schedules by priority (the request's
    # rank among its tenant's running ones, tenants.fairshare); engines
    # without priorities ignore it.
    priority: int = 0
    prompt_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        given = [self.messages, self.prompt, self.prompt_token_ids]
        if sum(x is not None for x in given) != 1:
            raise ValueError("set exactly one of messages, prompt or prompt_token_ids")


@dataclass
class Chunk:
    """One streamed increment.

    `text` is the new text since the previous chunk (may be empty on the last
    one). The last chunk has `finish_reason` set ("stop", "length", or "abort"
    when `GenerationEngine.abort` ended it) and the
    token counts; `metrics` then holds engine timings in seconds where the
    engine reports them (e.g. `ttft_s`, `queue_s`, `prefill_s`, `decode_s`).
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


class GenerationEngine(abc.ABC):
    """A streaming text generator.

    Contract: `start()` once before use; `generate()` yields `Chunk`s as text is
    produced and ends with a chunk whose `finish_reason` is set. Errors a user
    can fix raise `models.errors.PromptTooLongError` or
    `models.errors.InvalidRequestError` before the first chunk;
    a dead engine raises `models.errors.EngineDeadError`. Closing the iterator
    early (client disconnect, task cancelled) aborts the request in the engine.
    """

    model_id: str
    max_model_len: int

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and warm it up with one real request."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the completion of `request`.

        Yields:
            Chunk: text increments; the last one carries finish_reason and usage.
        """

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a running request; unknown ids are ignored."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise `EngineDeadError` when the engine cannot serve."""

    @abc.abstractmethod
    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the prompt as the engine will see it (template applied)."""

    async def stats(self) -> dict[str, Any]:
        """Engine gauges such as KV-cache usage and running/waiting requests."""
        return {}

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release the engine's processes and memory."""
