"""The app's exception handlers: every error, validation and routing ones
included, answered in the one envelope of `graph.errors`; OPTIONS answered
with the path's true `Allow`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from graph.errors import LIMIT_EXCEEDED, APIError, error_response, to_api_error
from models.errors import ModelError


def _is_union_tag(part: Any) -> bool:
    """Pydantic names the union member that failed (`str`, `list[TextPart]`,
    `function-after[...]`, `RerankDocument`); field names are lowercase."""
    return isinstance(part, str) and (
        "[" in part or part in ("str", "int", "float", "bool") or part[:1].isupper()
    )


_TYPE_MISMATCH = frozenset(
    {"string_type", "list_type", "model_type", "dict_type", "int_type", "float_type"}
)


def _union_branch(err: Any) -> tuple[Any, ...] | None:
    loc = tuple(err.get("loc", ()))
    for i, part in enumerate(loc):
        if _is_union_tag(part):
            return loc[:i]
    return None


def _relevant(errors: list[Any]) -> list[Any]:
    """Of a union field's failed members, drop "wrong type" errors when another
    member matched the input's type and failed on its value."""
    informative = {
        _union_branch(e)
        for e in errors
        if _union_branch(e) is not None and e.get("type") not in _TYPE_MISMATCH
    }
    return [
        e
        for e in errors
        if not (e.get("type") in _TYPE_MISMATCH and _union_branch(e) in informative)
    ]


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body" and not _is_union_tag(p)]
    return ".".join(parts) or None


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of `app` serves at the request's path (with
    HEAD for GET, and OPTIONS, which this app answers for every path)."""
    methods: set[str] = {"OPTIONS"}
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the envelope."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc, getattr(request.state, "request_id", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        errors = _relevant(list(exc.errors()))
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(
                APIError(400, "Request body is not valid JSON.", code="invalid_json"),
                getattr(request.state, "request_id", None),
            )
        if first.get("type") == LIMIT_EXCEEDED:  # a count, before its items
            where = _param_from_loc(tuple(first.get("loc", ())))
            return error_response(
                APIError(400, first["msg"], param=where, code=LIMIT_EXCEEDED),
                getattr(request.state, "request_id", None),
            )
        messages = []
        seen: set[str | None] = set()
        for err in errors:
            where = _param_from_loc(tuple(err.get("loc", ())))
            if where in seen:  # another member of the same union: say it once
                continue
            seen.add(where)
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown or unsupported field"
            if err.get("type") == "missing" and where is None:
                msg = "request body is required"
            messages.append(f"{where}: {msg}" if where else msg)
        param = _param_from_loc(tuple(first.get("loc", ()))) if first else None
        return error_response(
            APIError(400, "; ".join(messages), param=param, code="invalid_value"),
            getattr(request.state, "request_id", None),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        message = str(exc.detail) if exc.detail else "error"
        headers = dict(exc.headers or {})
        if status == 404:
            message = f"No route {request.method} {request.url.path}."
        elif status == 405:
            # Starlette names only the first matching route's methods; a path
            # served by several routes (GET and POST /admin/traffic) has all.
            headers["Allow"] = ", ".join(allowed_methods(app, request))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
            message = f"Method {request.method} not allowed on {request.url.path}."
        response = error_response(
            APIError(status, message), getattr(request.state, "request_id", None)
        )
        for name, value in headers.items():  # Allow, on a 405
            response.headers[name] = value
        return response

    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        return error_response(to_api_error(exc, rid), rid)

    # Errors from our models and from Ray's handles are answered here, where
    # Starlette does not re-raise them (it re-raises from the catch-all below,
    # and Ray Serve would then swap in its own plain-text 503 for overload).
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import RayServeException

    for cls in (ModelError, RayTaskError, RayActorError, RayServeException):
        app.add_exception_handler(cls, _mapped)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        return error_response(to_api_error(exc, rid), rid)
