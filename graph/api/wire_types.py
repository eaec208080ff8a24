"""The field types and base models every wire model shares: strict integers
that accept `35.0`, text that refuses only what cannot be encoded (lone UTF-16
surrogates), token-id arrays, the request and response bases."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

#: vLLM's engine transport carries seeds as signed 64-bit integers.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Completion tokens a request may ask for at most, whatever the model (the
#: context window bounds it further, see `graph.api.limits`).
MAX_TOKENS_CAP = 2**31 - 1


_UNENCODABLE = re.compile("[\ud800-\udfff]")
#: Token ids travel as vLLM's engine carries them: non-negative int32.
TOKEN_ID_MAX = 2**31 - 1


def _encodable(text: str) -> str:
    """Refuse text that cannot be UTF-8 encoded (lone surrogates).

    NUL is valid UTF-8 and a real token (vLLM and OpenAI accept it), so it is
    kept; the stores that cannot hold it escape it (`tenants.store`), and the
    audit log's JSON writes it as `\\u0000`.
    """
    bad = _UNENCODABLE.search(text)
    if bad is None:
        return text
    ch, at = bad.group(), bad.start()
    raise ValueError(
        f"text holds a lone UTF-16 surrogate (U+{ord(ch):04X}) at character "
        f"{at}; send valid Unicode"
    )


def _whole_number(value: Any) -> Any:
    """JSON's `35.0` is an integer (JSON Schema agrees); strings and booleans
    stay refused by the strict int that follows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer field: strict, but `35.0` counts.
Int = Annotated[int, BeforeValidator(_whole_number)]

#: Any text a client sends (JSON Schema cannot express "no lone surrogate";
#: JSON generators make none).
Text = Annotated[str, AfterValidator(_encodable)]

#: A name or user id: `Text` of at most 256 characters (the length checked
#: first, so its error says "characters").
ShortText = Annotated[str, Field(max_length=256), AfterValidator(_encodable)]

#: One token id of the model's own tokenizer (the engine refuses an id past
#: its vocabulary, naming it).
TokenId = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=TOKEN_ID_MAX)]

#: A prompt or input given as token ids, as OpenAI and vLLM accept it.
TokenIds = Annotated[list[TokenId], Field(min_length=1)]


class _Request(BaseModel):
    # Strict: `"rerank": 0` or `"top_k": "5"` is a 400, as the schema says,
    # not silently coerced.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
