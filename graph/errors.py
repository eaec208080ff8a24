"""The one OpenAI error envelope, and the mapping from exceptions to it.

Every 4xx/5xx, streaming or not, is `{"error": {"message", "type", "param",
"code"}}`. A 500 never carries exception text; it is logged with the request id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from graph.counts import LIMIT_EXCEEDED
from models.errors import (
    EngineDeadError,
    InvalidRequestError,
    ModelError,
    ModelNotFoundError,
    PromptTooLongError,
)

logger = logging.getLogger("ragserve.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error with a status and a message that is safe to show the client."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


def _encodable(text: str) -> str:
    """Escape what UTF-8 cannot hold (a lone surrogate echoed from a JSON key)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": _encodable(message),
            "type": _TYPES.get(
                status,
                "invalid_request_error" if status < 500 else "internal_server_error",
            ),
            "param": None if param is None else _encodable(param),
            "code": code,
        }
    }


def error_response(err: APIError, request_id: str | None = None) -> JSONResponse:
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    if request_id:
        headers["x-request-id"] = request_id
    return JSONResponse(
        error_body(err.status, err.message, err.param, err.code),
        status_code=err.status,
        headers=headers,
    )


def sse_error(err: APIError) -> str:
    """A streaming error: the same envelope, as a final SSE event's data."""
    body = error_body(err.status, err.message, err.param, err.code)
    return json.dumps(body)


def is_overload(exc: BaseException) -> bool:
    """Ray Serve refused the call: a full queue or no replica to take it."""
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    return isinstance(exc, (BackPressureError, DeploymentUnavailableError))


def overloaded(exc: BaseException) -> APIError:
    retry = getattr(exc, "retry_after_s", None)
    return APIError(
        503,
        "The server is at capacity; retry after the indicated delay.",
        code="overloaded",
        retry_after=max(1, round(retry)) if retry else 1,
    )


def _cause(exc: BaseException) -> BaseException:
    """Ray wraps replica exceptions; find the one raised in our code."""
    seen = exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        seen = cause
    return seen


def to_api_error(exc: BaseException, request_id: str | None = None) -> APIError:
    """Map any exception to an APIError; unknown ones become a logged 500."""
    if isinstance(exc, APIError):
        return exc
    cause = _cause(exc)
    if isinstance(cause, PromptTooLongError) or isinstance(exc, PromptTooLongError):
        err = cause if isinstance(cause, PromptTooLongError) else exc
        return APIError(400, str(err), param="messages", code="context_length_exceeded")
    if isinstance(cause, EngineDeadError):
        logger.error("request %s: engine dead: %s", request_id, cause)
        return APIError(
            503,
            "The generation engine is restarting; retry shortly.",
            code="engine_unavailable",
            retry_after=5,
        )
    if isinstance(cause, ModelNotFoundError):
        return APIError(404, str(cause), param="model", code="model_not_found")
    if isinstance(cause, InvalidRequestError):
        return APIError(400, str(cause), param=cause.param, code="invalid_value")
    if isinstance(cause, ModelError):
        return APIError(400, str(cause))
    if is_overload(cause):
        return overloaded(cause)
    if _replica_lost(exc):
        logger.warning("request %s: a replica was lost: %s", request_id, exc)
        return APIError(
            503,
            "A replica serving this request was lost; retry shortly.",
            code="replica_unavailable",
            retry_after=5,
        )
    logger.error(
        "request %s failed: %s",
        request_id,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return APIError(
        500,
        f"Internal server error; quote request id {request_id} to the operator."
        if request_id
        else "Internal server error.",
        code="internal_error",
    )


def _replica_lost(exc: BaseException) -> bool:
    from graph.resilience import replica_lost

    return replica_lost(exc)


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
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = str(exc.detail) if exc.detail else "error"
        if status == 404:
            message = f"No route {request.method} {request.url.path}."
        elif status == 405:
            message = f"Method {request.method} not allowed on {request.url.path}."
        response = error_response(
            APIError(status, message), getattr(request.state, "request_id", None)
        )
        for name, value in (exc.headers or {}).items():  # Allow, on a 405
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
