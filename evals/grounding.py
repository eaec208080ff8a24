"""Answer checks without a judge model: citations, lexical groundedness, refusals.

Knows the `[n]` citation markers the prompt templates ask for, a lexical
support proxy for groundedness and what a refusal looks like; knows nothing
of how the answer was made.

Groundedness proxy (`groundedness`): the answer is cut into sentences; a
sentence of at least `MIN_TOKENS` content words (lower-cased, stop words out,
a plural or -ed/-ing ending folded) is *supported* when at least
`SUPPORT` of its content words occur in the chunks it cites (all the prompt's
chunks when it cites none) and every number in it occurs there too. The score
is the share of supported sentences.

What it catches: names, numbers, flags, file paths and terms that are not in
the context (the usual small-model invention), an answer about another topic
than its citations, and citing the wrong chunk. What it cannot catch: a
sentence that reuses the context's words to say something false (a dropped
"not", swapped subjects, a wrong number copied from another line of the same
chunk), a wrong inference from true parts; and it marks a correct paraphrase
with synonyms as unsupported. It measures copying from the sources, a floor
on invention, not truth.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bm25s.stopwords import STOPWORDS_EN_PLUS

SUPPORT = 0.75
MIN_TOKENS = 3

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9][a-z0-9_.\-/]*[a-z0-9]|[a-z0-9]")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_STOP = frozenset(STOPWORDS_EN_PLUS) | {"ragserve", "also", "use", "used", "can"}
_REFUSAL = re.compile(
    r"\b(i (?:do not|don't|cannot|can't) (?:know|answer|find|say)|"
    r"(?:does not|doesn't|do not|don't) (?:contain|mention|provide|say|include)|"
    r"no (?:information|mention|answer)|"
    r"not (?:enough|sufficient) (?:information|context)|"
    r"unable to (?:answer|find))\b"
)


def cited_indices(answer: str, n_chunks: int) -> list[int]:
    """The 1-based chunk numbers the answer cites ([2], [1, 3]), in order of
    first mention; numbers outside 1..n_chunks are ignored."""
    found: dict[int, None] = {}
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            n = int(part)
            if 1 <= n <= n_chunks:
                found[n] = None
    return list(found)


def is_refusal(answer: str) -> bool:
    """Empty, or says it does not know / the context lacks the answer."""
    text = answer.strip().lower().replace("\u2019", "'")
    return not text or bool(_REFUSAL.search(text))


def _fold(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return [_fold(w) for w in words if w not in _STOP and (len(w) > 2 or w.isdigit())]


@dataclass(frozen=True)
class Grounding:
    """Sentences checked and those supported by the cited text."""

    sentences: int
    supported: int

    @property
    def score(self) -> float | None:
        return self.supported / self.sentences if self.sentences else None


def groundedness(answer: str, sources: Sequence[str]) -> Grounding:
    """The lexical support of `answer`'s sentences by `sources` (see module)."""
    vocabulary = {w for text in sources for w in content_words(text)}
    checked = supported = 0
    for sentence in _SENTENCE.split(_CITATION.sub(" ", answer)):
        words = content_words(sentence)
        if len(words) < MIN_TOKENS:
            continue
        checked += 1
        share = sum(1 for w in words if w in vocabulary) / len(words)
        numbers_ok = all(w in vocabulary for w in words if _NUMBER.match(w))
        if share >= SUPPORT and numbers_ok:
            supported += 1
    return Grounding(checked, supported)
