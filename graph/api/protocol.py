"""OpenAI-compatible wire models (requests in, responses out).

Requests forbid unknown fields, so an unsupported OpenAI option (`tools`,
`logprobs`, ...) is a 400 naming the field rather than silently ignored.
Sampling fields carry the ranges vLLM's `SamplingParams` accepts, and every
text field refuses only what cannot be encoded (lone UTF-16 surrogates; NUL
is text), so a bad value is a 400 at the edge, never a 500 in an engine (the
field types are `graph.api.wire_types`). A completion's prompt and an
embedding's input may be token ids, as OpenAI and vLLM accept them. Counts
that come from config are refused while validating (`graph.api.counts`), the
other limits in `graph.api.limits`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from graph.api.counts import counted
from graph.api.wire_types import (
    INT64_MAX,
    INT64_MIN,
    MAX_TOKENS_CAP,
    Int,
    ShortText,
    Text,
    TokenIds,
    _Request,
    _Response,
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# --- chat ---------------------------------------------------------------------


class TextPart(_Request):
    type: Literal["text"]
    text: Text


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] = Field(
        union_mode="left_to_right", description="The message text, or text parts."
    )
    name: ShortText | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Request):
    include_usage: bool = False


class RagOptions(_Request):
    """ragserve's extension (`extra_body={"rag": {...}}` in the openai client)."""

    enabled: bool = Field(True, description="False skips retrieval entirely.")
    top_k: Int | None = Field(None, ge=1, le=1000, description="Chunks retrieved.")
    top_n: Int | None = Field(
        None, ge=1, le=100, description="Chunks kept (at most top_k)."
    )
    rerank: bool | None = Field(None, description="Rerank retrieved chunks.")


#: "stream_options only with stream: true", as JSON Schema says it.
_STREAM_OPTIONS_NEED_STREAM: JsonDict = {
    "if": {
        "properties": {"stream_options": {"type": "object"}},
        "required": ["stream_options"],
    },
    "then": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
}


class _Sampling(_Request):
    """Sampling fields, with the ranges vLLM's `SamplingParams` accepts."""

    model_config = ConfigDict(json_schema_extra=_STREAM_OPTIONS_NEED_STREAM)

    model: Text | None = None
    max_tokens: Int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: Text | list[Text] | None = Field(
        None, description="Up to 4 non-empty stop sequences."
    )
    seed: Int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    n: Int = Field(1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: ShortText | None = None
    # vLLM's extension: generate exactly max_tokens (benchmarks, load tests).
    ignore_eos: bool = False
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, allow_inf_nan=False)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else v or []
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not item for item in items):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], counted("messages")] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    rag: RagOptions | None = None

    @model_validator(mode="after")
    def _has_user_message(self) -> ChatCompletionRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one user message")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Citation(_Response):
    index: int
    doc_id: str
    chunk_id: int
    title: str | None = None
    text: str
    score: float


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Response):
    index: int = 0
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation] = Field(default_factory=list)
    #: The release that answered (`name@id`), OpenAI's backend-config field.
    system_fingerprint: str | None = None


class DeltaMessage(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Response):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None
    system_fingerprint: str | None = None


# --- completions --------------------------------------------------------------


#: What `/v1/completions` and `/v1/embeddings` take as one prompt or input.
Prompt = str | list[int]


class CompletionRequest(_Sampling):
    prompt: Text | list[Text] | TokenIds | list[TokenIds] = Field(
        union_mode="left_to_right",
        description="One non-empty prompt: text, or token ids of the model's "
        "tokenizer (as vLLM takes them).",
    )
    echo: bool = Field(
        False, json_schema_extra={"const": False}, description="Only false."
    )

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: Any) -> Any:
        if _is_token_ids(v):
            return v
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt is supported")
        if not (v if isinstance(v, str) else v[0]):
            raise ValueError("prompt must not be empty")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    def prompt_input(self) -> Prompt:
        """The one prompt: its text, or its token ids."""
        v: Any = self.prompt
        return v if isinstance(v, str) or _is_token_ids(v) else v[0]


def _is_token_ids(v: Any) -> bool:
    """A flat list of token ids (one prompt or input), not a list of them."""
    return isinstance(v, list) and bool(v) and isinstance(v[0], int)


class CompletionChoice(_Response):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# --- embeddings ---------------------------------------------------------------


class EmbeddingRequest(_Request):
    input: Annotated[
        Text | list[Text] | TokenIds | list[TokenIds], counted("input")
    ] = Field(
        union_mode="left_to_right",
        description="Non-empty texts to embed, or token ids of the embedder's "
        "tokenizer (taken as they are, as vLLM does).",
    )
    model: Text | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Int | None = Field(None, ge=1, le=65536)
    user: ShortText | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) or _is_token_ids(v) else v
        if not items:
            raise ValueError("input must not be empty")
        if len(items) > 2048:
            raise ValueError("at most 2048 inputs per request")
        if any(not s for s in items):
            raise ValueError("input strings must not be empty")
        return v

    def inputs(self) -> list[Prompt]:
        """Each input: a text or its token ids."""
        v: Any = self.input
        return [v] if isinstance(v, str) or _is_token_ids(v) else list(v)


class EmbeddingData(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(_Response):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: dict[str, int]


# --- rerank (Cohere / Jina / vLLM shape) --------------------------------------


class RerankDocument(_Request):
    text: Text


class RerankRequest(_Request):
    query: Text = Field(min_length=1)
    documents: Annotated[list[Text | RerankDocument], counted("documents")] = Field(
        min_length=1
    )
    model: Text | None = None
    top_n: Int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    return_documents: bool = True

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(_Response):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(_Response):
    id: str
    model: str
    results: list[RerankResult]


# --- retrieve -----------------------------------------------------------------


class RetrieveRequest(_Request):
    query: Text = Field(min_length=1)
    top_k: Int | None = Field(None, ge=1, le=1000)
    rerank: bool = False
    top_n: Int | None = Field(None, ge=1, le=1000)


class RetrieveResponse(_Response):
    object: Literal["list"] = "list"
    data: list[Citation]


# --- models -------------------------------------------------------------------


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragserve"
    task: str
    max_model_len: int | None = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=False)
