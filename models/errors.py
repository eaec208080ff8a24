"""Errors raised by model engines, mapped to HTTP statuses by the graph."""

from __future__ import annotations


class ModelError(Exception):
    """Base class for model errors whose message is safe to show a user."""


class ModelNotFoundError(ModelError):
    """A configured model path or id cannot be resolved to local files."""


class PromptTooLongError(ModelError):
    """The prompt plus the requested completion does not fit the context window.

    Attributes:
        prompt_tokens: tokens in the rendered prompt.
        max_tokens: completion tokens requested.
        max_model_len: the engine's context window.
    """

    def __init__(self, prompt_tokens: int, max_tokens: int, max_model_len: int):
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens; the "
            f"request has {prompt_tokens} prompt tokens and asks for {max_tokens} "
            "completion tokens. Shorten the messages or lower max_tokens."
        )

    def __reduce__(self) -> tuple[type, tuple[int, int, int]]:
        # Crosses Ray process boundaries by pickle; the default would call
        # __init__ with the message alone.
        return (type(self), (self.prompt_tokens, self.max_tokens, self.max_model_len))


class InvalidRequestError(ModelError):
    """The engine refuses a request's values (a sampling parameter, text it
    cannot encode); the graph validates first, so this is the last line.

    Attributes:
        param: the request field at fault, when known.
    """

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        return (type(self), (str(self), self.param))


class EngineDeadError(ModelError):
    """The generation engine stopped and cannot serve requests."""


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> list[int]:
    """`ids` when every one is in the tokenizer's vocabulary, else an
    `InvalidRequestError` naming the first one that is not (as vLLM does)."""
    for i, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise InvalidRequestError(
                f"{param} holds token id {token} at position {i}, outside the "
                f"model's vocabulary (0 to {vocab_size - 1})",
                param=param,
            )
    return list(ids)
