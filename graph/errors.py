"""The one OpenAI error envelope, and the mapping from exceptions to it.

Every 4xx/5xx, streaming or not, is `{"error": {"message", "type", "param",
"code"}}`. A 500 never carries exception text; it is logged with the request id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse

from models.errors import (
    EngineDeadError,
    InvalidRequestError,
    ModelError,
    ModelNotFoundError,
    PromptTooLongError,
)

logger = logging.getLogger("ragserve.api")

#: The code of a refusal past one of the `limits` bounds (400, before any work).
LIMIT_EXCEEDED = "limit_exceeded"

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
    if replica_lost(exc):
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


def replica_lost(exc: BaseException) -> bool:
    """Ray says the replica (or its worker, or its node) went away: the call
    may not have run, and an idempotent one can be sent again."""
    from ray.exceptions import (
        LocalRayletDiedError,
        NodeDiedError,
        RayActorError,
        WorkerCrashedError,
    )
    from ray.serve.exceptions import ReplicaUnavailableError

    lost = (
        RayActorError,  # ActorDiedError, ActorUnavailableError
        WorkerCrashedError,
        NodeDiedError,
        LocalRayletDiedError,
        ReplicaUnavailableError,
    )
    if isinstance(exc, lost):
        return True
    # A replica that called another one gets the other's death wrapped.
    return isinstance(getattr(exc, "cause", None), lost)
