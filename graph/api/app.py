"""The OpenAI-compatible HTTP API as a FastAPI app over a `ServingContext`.

Composes the error handlers, the middleware and the routers of
`graph.api.routes`; the same app runs inside the Ray Serve ingress and, in unit
tests, over an in-process context.
"""

from __future__ import annotations

from fastapi import FastAPI

from graph.api.context import ModelNames, ServingContext, api_keys, model_names
from graph.api.handlers import install_error_handlers
from graph.api.middleware import install_middleware
from graph.api.openapi import install_openapi
from graph.api.routes import ROUTERS
from graph.resilience import DeadlineMiddleware

__all__ = ["ModelNames", "ServingContext", "api_keys", "create_app", "model_names"]


def create_app(ctx: ServingContext) -> FastAPI:
    """Build the FastAPI app serving `ctx`."""
    app = FastAPI(title="ragserve", version="0.1.0")
    app.state.ctx = ctx
    install_error_handlers(app)
    # Added first, so it runs inside the request id / span / auth middleware.
    app.add_middleware(DeadlineMiddleware, config=ctx.args.resilience)
    install_middleware(app, ctx)
    install_openapi(app, ctx)
    for router in ROUTERS:
        app.include_router(router)
    return app
