"""Versioned prompt templates: retrieved chunks + the conversation -> messages.

Templates are immutable once released; a change is a new version, so a trace,
an eval or a release manifest can name exactly which prompt produced an
answer (by id, version and the hash of its text).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from retrieval.types import Hit


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: str
    system: str
    context_item: str
    no_context: str

    def text_hash(self) -> str:
        """sha256 of the template's text parts (what a release pins)."""
        parts = {k: v for k, v in asdict(self).items() if k not in ("id", "version")}
        blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    def render(
        self,
        messages: list[dict[str, str]],
        hits: list[Hit],
        max_context_chars: int,
    ) -> list[dict[str, str]]:
        """Put the context into a system message ahead of the conversation.

        Chunks are added best first until `max_context_chars` is reached; a
        client's own system messages follow ours.
        """
        parts: list[str] = []
        used = 0
        for i, hit in enumerate(hits, start=1):
            item = self.context_item.format(
                n=i, doc_id=hit.doc_id, text=hit.text.strip()
            )
            if parts and used + len(item) > max_context_chars:
                break
            parts.append(item[:max_context_chars])
            used += len(item)
        context = "\n\n".join(parts) if parts else self.no_context
        return [
            {"role": "system", "content": self.system.format(context=context)},
            *messages,
        ]


_RAG_SYSTEM = (
    "You are a helpful assistant. Answer the user's question using the "
    "context below. Cite sources as [n]. If the context does not contain "
    "the answer, say you don't know.\n\nContext:\n{context}"
)

TEMPLATES: dict[str, PromptTemplate] = {
    "rag-v1": PromptTemplate(
        id="rag-v1",
        version="1",
        system=_RAG_SYSTEM,
        context_item="[{n}] ({doc_id}) {text}",
        no_context="(no documents were retrieved)",
    ),
    "rag-concise-v1": PromptTemplate(
        id="rag-concise-v1",
        version="1",
        system=(
            "Answer in one short sentence from the context below; cite it as "
            "[n]. Say you don't know when it is not there.\n\nContext:\n{context}"
        ),
        context_item="[{n}] {text}",
        no_context="(nothing retrieved)",
    ),
}


def get_template(template_id: str) -> PromptTemplate:
    """The template registered under `template_id`.

    Raises:
        ValueError: no such template; the message lists the known ones.
    """
    try:
        return TEMPLATES[template_id]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise ValueError(
            f"unknown prompt template {template_id!r}; known: {known}"
        ) from None
