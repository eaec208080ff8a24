"""Split documents into overlapping word windows that respect their structure.

Knows markdown / reStructuredText headings, code fences and paragraphs; knows
nothing of tokenizers, vectors or indexes (sizes are counted in words).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from retrieval.documents import HTML_SUFFIXES, Document


@dataclass(frozen=True)
class TextChunk:
    """A piece of a document, the unit that is embedded and retrieved.

    Attributes:
        doc_id: the source document.
        text: the chunk's text, as it appears in the document.
        title: the nearest heading above the chunk; None before the first
            heading and for formats without headings.
        index: position of the chunk within its document, from 0.
    """

    doc_id: str
    text: str
    title: str | None
    index: int


def titled(text: str, title: str | None) -> str:
    """The text a chunk is embedded (and lexically matched) as: its section
    title in front, unless the chunk's first line already holds it."""
    if title and title not in text.split("\n", 1)[0]:
        return f"{title}\n\n{text}"
    return text


def chunk_document(
    doc: Document, chunk_size: int, chunk_overlap: int
) -> list[TextChunk]:
    """Cut `doc` into chunks of at most `chunk_size` words.

    The document is first split into sections at its headings (markdown
    `#`/setext headings outside code fences, reStructuredText underlined
    titles; HTML headings arrive as markdown). A section that fits is one
    chunk; a longer one is cut into windows of `chunk_size` words, each
    starting `chunk_overlap` words before the previous one ended, and a window
    ends early at a paragraph break when one lies in its second half. A
    heading with no text of its own joins the section below it.

    Args:
        doc: the document.
        chunk_size: most words per chunk (>= 1).
        chunk_overlap: words shared by consecutive windows of one section
            (0 <= chunk_overlap < chunk_size).

    Returns:
        The chunks in document order; the same input always gives the same
        chunks.

    Raises:
        ValueError: sizes out of range.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"chunk_overlap ({chunk_overlap}) must be >= 0 and smaller than "
            f"chunk_size ({chunk_size})"
        )
    chunks: list[TextChunk] = []
    for title, text in _sections(doc.text, _format_of(doc.doc_id)):
        for piece in _windows(text, chunk_size, chunk_overlap):
            chunks.append(TextChunk(doc.doc_id, piece, title, len(chunks)))
    return chunks


def _format_of(doc_id: str) -> str:
    name = doc_id.lower()
    if name.endswith((".md", ".markdown", *HTML_SUFFIXES)):
        return "markdown"
    if name.endswith(".rst"):
        return "rst"
    return "plain"


_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.!$%&,/;<>?@\\_|])\1{2,}[ \t]*$")


def _underline(line: str, fmt: str) -> bool:
    if fmt == "markdown":
        return bool(_MD_UNDERLINE.match(line)) and len(line.strip()) >= 3
    return fmt == "rst" and bool(_RST_UNDERLINE.match(line))


def _sections(text: str, fmt: str) -> list[tuple[str | None, str]]:
    """Split text into (title, section text) at headings; heading lines stay in."""
    sections: list[tuple[str | None, str]] = []
    title: str | None = None
    lines: list[str] = []
    body_start = 0  # lines[:body_start] are the section's heading lines
    fence: str | None = None
    source = text.splitlines()
    i = 0
    while i < len(source):
        line = source[i]
        heading: str | None = None
        heading_lines = [line]
        if fmt == "markdown" and (m := _FENCE.match(line)):
            marker = m.group(1)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
        elif fence is None and fmt != "plain":
            atx = _ATX.match(line) if fmt == "markdown" else None
            if atx and atx.group(1).strip():
                heading = atx.group(1).strip()
            elif _titled(source, i, fmt):
                heading = line.strip()
                heading_lines.append(source[i + 1])
                if _overline(source, i, fmt):
                    heading_lines.insert(0, lines.pop())
        if heading is None:
            lines.append(line)
            i += 1
            continue
        i += 2 if len(heading_lines) > 1 else 1
        # A heading with no text of its own stays as context for the next one.
        if any(line.strip() for line in lines[body_start:]):
            sections.append((title, "\n".join(lines)))
            lines = []
        title = heading
        lines.extend(heading_lines)
        body_start = len(lines)
    sections.append((title, "\n".join(lines)))
    return [(t, s.strip()) for t, s in sections if s.strip()]


def _titled(source: list[str], i: int, fmt: str) -> bool:
    """Whether line i is a setext / reStructuredText title (underlined)."""
    line = source[i]
    return (
        bool(line.strip())
        and not _underline(line, fmt)
        and i + 1 < len(source)
        and _underline(source[i + 1], fmt)
        and (i == 0 or not source[i - 1].strip() or _overline(source, i, fmt))
    )


def _overline(source: list[str], i: int, fmt: str) -> bool:
    return (
        fmt == "rst"
        and i > 0
        and i + 1 < len(source)
        and _underline(source[i - 1], fmt)
        and source[i - 1].strip() == source[i + 1].strip()
    )


_WORD = re.compile(r"\S+")


def _windows(text: str, size: int, overlap: int) -> list[str]:
    spans = [m.span() for m in _WORD.finditer(text)]
    n = len(spans)
    if n <= size:
        return [text] if n else []
    # Word j starts a paragraph when a blank line separates it from word j - 1.
    breaks = [
        j for j in range(1, n) if text.count("\n", spans[j - 1][1], spans[j][0]) >= 2
    ]
    # Never snap below this length: keeps chunks useful and guarantees progress.
    min_len = max(size // 2, overlap + 1)
    pieces = []
    start = 0
    while True:
        end = min(start + size, n)
        if end < n:
            pos = bisect.bisect_right(breaks, end) - 1
            if pos >= 0 and breaks[pos] >= start + min_len:
                end = breaks[pos]
        pieces.append(text[spans[start][0] : spans[end - 1][1]])
        if end >= n:
            return pieces
        start = end - overlap
