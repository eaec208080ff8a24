"""The HTTP face of the graph: the FastAPI app, its routes, middleware, wire
protocol, OpenAPI document, error handlers, SSE framing and request limits."""
