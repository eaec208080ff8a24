"""`POST /v1/feedback`: a thumbs up or down on a completion, by the tenant that
made it, joined to that completion's release and trace."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from graph.api.context import Ctx
from graph.api.wire_types import Text
from graph.errors import APIError
from graph.gate.admission import current_admission
from telemetry.metrics import metrics
from tenants.store import Completion

router = APIRouter()
# A completion's owner is written off the request path (and possibly by another
# ingress replica): wait this long for it before answering 404.
LOOKUP_WAIT_S = 1.5


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=80, description="The completion id.")
    rating: Literal[1, -1] = Field(description="1 (thumbs up) or -1 (down).")
    comment: Annotated[Text, Field(max_length=4000)] | None = Field(
        None, description="Free text (NUL included; no lone surrogate)."
    )


@router.post("/v1/feedback")
async def feedback(body: FeedbackRequest, ctx: Ctx) -> dict[str, Any]:
    """Rate one of your own completions."""
    adm = current_admission()
    gate = ctx.gate
    if gate is None or adm is None:
        raise APIError(404, "Feedback needs the tenant store.", code="not_found")
    done = await _find(gate.store, body.id)
    if done is None or done.tenant != adm.principal.name:
        raise APIError(
            404,
            f"No completion with id {body.id!r}.",
            param="id",
            code="completion_not_found",
        )
    await asyncio.to_thread(gate.store.add_feedback, done, body.rating, body.comment)
    release = done.release or "default"
    metrics().feedback(release, body.rating)
    adm.completion_id, adm.release = done.id, done.release
    return {
        "object": "feedback",
        "id": done.id,
        "rating": body.rating,
        "release": release,
        "trace_id": done.trace_id,
    }


async def _find(store: Any, completion_id: str) -> Completion | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOOKUP_WAIT_S
    while True:
        done: Completion | None = await asyncio.to_thread(
            store.completion, completion_id
        )
        if done is not None or loop.time() >= deadline:
            return done
        await asyncio.sleep(0.1)
