"""Load a folder of text documents.

Knows which file types are text and how to read them (HTML reduced to its
text); knows nothing of chunks, vectors or indexes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from retrieval.errors import DocumentError

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst")
HTML_SUFFIXES = (".html", ".htm")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES


@dataclass(frozen=True)
class Document:
    """One source file.

    Attributes:
        doc_id: path relative to the docs folder, with forward slashes.
        text: the file's text (for HTML: the visible text, headings as
            markdown `#` lines).
        sha256: hex digest of the file's bytes.
    """

    doc_id: str
    text: str
    sha256: str


def load_documents(docs_dir: str | Path) -> list[Document]:
    """Read every supported file under `docs_dir`, sorted by `doc_id`.

    Reads .md, .markdown, .txt, .rst, .html and .htm files recursively; hidden
    files and folders (names starting with ".") are skipped, and so are files
    with only whitespace (with a warning).

    Args:
        docs_dir: the documents folder.

    Returns:
        The documents, sorted by `doc_id`.

    Raises:
        DocumentError: the folder is missing or not a folder, holds no
            supported file, holds only empty ones, or a file is unreadable,
            binary or not UTF-8.
    """
    root = Path(docs_dir).expanduser()
    if not root.exists():
        raise DocumentError(
            f"docs folder {root} does not exist; pass an existing folder of "
            f"{_suffix_list()} files"
        )
    if not root.is_dir():
        raise DocumentError(
            f"docs path {root} is a file, not a folder; pass the folder that "
            "holds the documents"
        )
    paths = _find_files(root)
    if not paths:
        raise DocumentError(
            f"no {_suffix_list()} files under {root}; add documents or pass "
            "another folder"
        )
    documents = []
    for rel in paths:
        doc = _read(root, rel)
        if doc.text.strip():
            documents.append(doc)
        else:
            logger.warning("skipping %s: it holds no text", root / rel)
    if not documents:
        raise DocumentError(
            f"all {len(paths)} document files under {root} are empty; add text "
            "to them or pass another folder"
        )
    return documents


def _suffix_list() -> str:
    return ", ".join(SUPPORTED_SUFFIXES)


def _find_files(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(SUPPORTED_SUFFIXES):
                continue
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def _read(root: Path, rel: str) -> Document:
    path = root / rel
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DocumentError(
            f"cannot read {path}: {reason}; fix its permissions or remove it"
        ) from exc
    if b"\x00" in data:
        raise DocumentError(
            f"{path} is a binary file, not text; remove it from the docs folder"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); "
            "convert it to UTF-8 (e.g. with iconv) or remove it"
        ) from exc
    if rel.lower().endswith(HTML_SUFFIXES):
        text = html_to_text(text)
    return Document(doc_id=rel, text=text, sha256=hashlib.sha256(data).hexdigest())


_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    ]
)
_SKIPPED_TAGS = frozenset(("script", "style", "template", "noscript", "title"))
_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _HEADING_TAGS:
            self.parts.append("\n\n" + "#" * _HEADING_TAGS[tag] + " ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag == "p" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _HEADING_TAGS or tag == "p":
            self.parts.append("\n\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Reduce HTML to its visible text.

    Scripts, styles and the page title are dropped, entities decoded, block
    elements become line breaks and headings become markdown `#` lines (so
    chunks get titles).

    Args:
        html: an HTML document or fragment.

    Returns:
        Plain text with paragraphs separated by blank lines.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
