"""What each simulated client sends: one request body per scenario, and the mix.

Knows the OpenAI-style request shapes of ragserve's endpoints (and of any
OpenAI server for the chat scenarios); knows nothing of scheduling or timing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

QUESTIONS = [
    "How does ragserve batch requests?",
    "What does the reranker do?",
    "How are traces propagated between deployments?",
    "Which model generates the answers by default?",
    "How does the embedder turn text into vectors?",
    "What happens when a client disconnects during streaming?",
    "How do I run ragserve on a GPU machine?",
    "What is time to first token and why does it matter?",
]

PASSAGES = [
    "Dynamic batching groups concurrent requests into one forward pass.",
    "The reranker scores each retrieved passage against the question.",
    "FAISS searches the vectors of every chunk for the nearest neighbours.",
    "vLLM streams tokens with continuous batching and a paged KV cache.",
    "Autoscaling adds replicas when ongoing requests exceed the target.",
    "The weather was mild that spring and the river ran high.",
    "A good bread needs flour, water, salt and yeast.",
    "Traces show where a request waited: queue, batch window or scheduler.",
]

#: Scenario names a user may pick; "mix" draws from them by weight.
SCENARIOS = ("chat_stream", "chat", "embeddings", "rerank", "retrieve")

DEFAULT_MIX = {"chat_stream": 3.0, "chat": 1.0, "embeddings": 3.0, "rerank": 2.0}


@dataclass(frozen=True)
class PayloadOptions:
    """Knobs of the request bodies.

    Attributes:
        model: `model` field for chat requests; None leaves it out (the server
            picks its one model).
        max_tokens: completion tokens asked for in chat requests.
        temperature: sampling temperature for chat; 0 makes runs repeatable.
        rag: "default" sends no `rag` field (the server's default: retrieval
            on), "off" sends `{"enabled": false}` (ragserve's extension).
        embed_inputs: texts per embeddings request.
        rerank_documents: documents per rerank request.
    """

    model: str | None = None
    max_tokens: int = 16
    temperature: float = 0.0
    rag: str = "default"
    embed_inputs: int = 1
    rerank_documents: int = 8


@dataclass(frozen=True)
class RequestSpec:
    """One request to send."""

    scenario: str
    path: str
    body: dict[str, Any]
    stream: bool


def build_request(
    scenario: str, options: PayloadOptions, rng: random.Random
) -> RequestSpec:
    """The request a client of `scenario` sends next.

    Args:
        scenario: one of `SCENARIOS`.
        options: body knobs.
        rng: picks the question, so a seeded run sends the same sequence.

    Raises:
        ValueError: unknown scenario.
    """
    question = rng.choice(QUESTIONS)
    if scenario in ("chat_stream", "chat"):
        stream = scenario == "chat_stream"
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": question}],
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if options.model:
            body["model"] = options.model
        if options.rag == "off":
            body["rag"] = {"enabled": False}
        return RequestSpec(scenario, "/v1/chat/completions", body, stream)
    if scenario == "embeddings":
        texts = [rng.choice(QUESTIONS + PASSAGES) for _ in range(options.embed_inputs)]
        return RequestSpec(scenario, "/v1/embeddings", {"input": texts}, False)
    if scenario == "rerank":
        docs = [PASSAGES[i % len(PASSAGES)] for i in range(options.rerank_documents)]
        rng.shuffle(docs)
        body = {"query": question, "documents": docs, "top_n": 3}
        return RequestSpec(scenario, "/v1/rerank", body, False)
    if scenario == "retrieve":
        body = {"query": question, "top_k": 8, "top_n": 3, "rerank": True}
        return RequestSpec(scenario, "/v1/retrieve", body, False)
    raise ValueError(f"unknown scenario {scenario!r}; pick one of {SCENARIOS}")


class ScenarioPicker:
    """Chooses the scenario of each request: a fixed one, or a weighted mix."""

    def __init__(self, scenario: str, mix: dict[str, float] | None = None) -> None:
        if scenario == "mix":
            weights = dict(mix or DEFAULT_MIX)
            unknown = sorted(set(weights) - set(SCENARIOS))
            if unknown:
                raise ValueError(
                    f"unknown scenario(s) in the mix: {', '.join(unknown)}; "
                    f"pick from {', '.join(SCENARIOS)}"
                )
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError("mix weights must be >= 0 and not all zero")
            self.names = [n for n, w in weights.items() if w > 0]
            self.weights = [weights[n] for n in self.names]
        elif scenario in SCENARIOS:
            self.names, self.weights = [scenario], [1.0]
        else:
            raise ValueError(
                f"unknown scenario {scenario!r}; pick one of "
                f"{', '.join((*SCENARIOS, 'mix'))}"
            )

    def pick(self, rng: random.Random) -> str:
        if len(self.names) == 1:
            return self.names[0]
        return rng.choices(self.names, weights=self.weights)[0]


def parse_mix(text: str) -> dict[str, float]:
    """`chat_stream=3,embeddings=1` -> `{"chat_stream": 3.0, "embeddings": 1.0}`.

    Raises:
        ValueError: an item is not `name=weight` with a numeric weight.
    """
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, weight = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"--mix expects name=weight items, got {item!r}") from None
    return out
