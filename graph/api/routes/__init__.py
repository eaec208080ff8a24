"""The API's routers, one module per endpoint family (vLLM's layout)."""

from graph.api.routes import (
    admin,
    chat,
    completions,
    embeddings,
    feedback,
    health,
    retrieval,
)

ROUTERS = [
    health.router,
    chat.router,
    completions.router,
    embeddings.router,
    retrieval.router,
    admin.router,
    feedback.router,
]
