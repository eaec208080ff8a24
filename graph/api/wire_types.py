"""The field types and base models every wire model shares: strict integers
that accept `35.0`, text that refuses what no tokenizer or database can hold
(lone UTF-16 surrogates, NUL), the request and response bases."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

#: vLLM's engine transport carries seeds as signed 64-bit integers.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Completion tokens a request may ask for at most, whatever the model (the
#: context window bounds it further, see `graph.api.limits`).
MAX_TOKENS_CAP = 2**31 - 1


_UNENCODABLE = re.compile("[\ud800-\udfff\x00]")


def _encodable(text: str) -> str:
    """Refuse text that cannot be UTF-8 encoded (lone surrogates) and NUL.

    NUL is refused rather than kept: no tokenizer needs it, C-string APIs and
    PostgreSQL text cannot hold it, and refusing it everywhere is the one
    rule that stays consistent from the HTTP edge to the audit log.
    """
    bad = _UNENCODABLE.search(text)
    if bad is None:
        return text
    ch, at = bad.group(), bad.start()
    if ch == "\x00":
        raise ValueError(f"text holds a NUL character at character {at}")
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

#: Any text a client sends; the schema's pattern tells generators about NUL
#: (JSON Schema cannot express "no lone surrogate").
Text = Annotated[
    str,
    AfterValidator(_encodable),
    Field(json_schema_extra={"pattern": "^[^\\u0000]*$"}),
]

#: A name or user id: `Text` of at most 256 characters (the length checked
#: first, so its error says "characters").
ShortText = Annotated[
    str,
    Field(max_length=256),
    AfterValidator(_encodable),
    Field(json_schema_extra={"pattern": "^[^\\u0000]*$"}),
]


class _Request(BaseModel):
    # Strict: `"rerank": 0` or `"top_k": "5"` is a 400, as the schema says,
    # not silently coerced.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
