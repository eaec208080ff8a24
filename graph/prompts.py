"""Versioned prompt templates: retrieved chunks + the conversation -> messages.

Templates are immutable once released; a change is a new version, so a trace
or an eval can name exactly which prompt produced an answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.types import Hit


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    context_item: str
    no_context: str

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


TEMPLATES: dict[str, PromptTemplate] = {
    "rag-v1": PromptTemplate(
        version="rag-v1",
        system=(
            "You are a helpful assistant. Answer the user's question using the "
            "context below. Cite sources as [n]. If the context does not contain "
            "the answer, say you don't know.\n\nContext:\n{context}"
        ),
        context_item="[{n}] ({doc_id}) {text}",
        no_context="(no documents were retrieved)",
    ),
}


def get_template(version: str) -> PromptTemplate:
    try:
        return TEMPLATES[version]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise ValueError(
            f"unknown prompt template {version!r}; known: {known}"
        ) from None
