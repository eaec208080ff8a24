"""`/admin/traffic`, `/admin/promote`, `/admin/rollback`, `/admin/restore`:
the live weights and the releases they keep deployed.

What `ragserve traffic` and `ragserve release promote|rollback` call. A change
is checked against the live releases and their warm-up first (400 naming the
rule, 409 when the live state cannot take it now; nothing changed), then
applied to every ingress replica through Serve's user_config, and answered
once this replica runs with it. `graph.api.openapi_admin` writes the live
release names and the weights' sum into the schema.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from graph.api.context import Ctx, ServingContext
from graph.api.wire_types import Int
from graph.errors import APIError
from graph.routing.router import ReleaseRouter
from releases import traffic as policy

router = APIRouter()


#: A percent of traffic (`50.0` counts, as JSON Schema's integer says).
Percent = Annotated[Int, Field(ge=0, le=100)]
#: A release's name as the registry spells it (`releases.registry`).
ReleaseName = Annotated[str, Field(min_length=1, max_length=128)]


class TrafficChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    weights: dict[ReleaseName, Percent] = Field(
        min_length=1,
        description="Percent per live release, summing to 100 (releases not "
        "named get 0).",
    )
    shadow: dict[ReleaseName, Annotated[Int, Field(ge=1, le=100)]] = Field(
        default_factory=dict, description="Mirrored percent per live release."
    )


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    release: ReleaseName = Field(description="A live release of this graph.")


def _router(ctx: ServingContext) -> ReleaseRouter:
    if ctx.router is None:
        raise APIError(404, "this graph routes no releases", code="no_releases")
    return ctx.router


@router.get("/admin/traffic")
async def traffic_show(ctx: Ctx) -> dict[str, Any]:
    """Live weights, shadow shares, warm-up states and canary verdicts."""
    return _router(ctx).describe()


@router.post("/admin/traffic")
async def traffic_set(body: TrafficChange, ctx: Ctx) -> dict[str, Any]:
    """New weights (and shadow shares) for the running graph."""
    r = _router(ctx)
    # Warm-up states are read under the change lock (a retirement may just
    # have gone before).
    await r.change(
        lambda s: policy.set_weights(s, body.weights, body.shadow, r.warm_states())
    )
    return r.describe()


@router.post("/admin/promote")
async def promote(body: Promotion, ctx: Ctx) -> dict[str, Any]:
    """A live release to 100%; the previous stable one becomes the rollback."""
    r = _router(ctx)
    await r.change(
        lambda s: policy.promote(s, body.release, r.warm_states()), "release.promote"
    )
    return r.describe()


@router.post("/admin/rollback")
async def rollback(ctx: Ctx) -> dict[str, Any]:
    """The stable release (or the one before it) back to 100%."""
    r = _router(ctx)
    await r.change(lambda s: policy.rollback(s, r.warm_states()), "release.rollback")
    return r.describe()


@router.post("/admin/restore")
async def restore(body: Promotion, ctx: Ctx) -> dict[str, Any]:
    """A retired release back: its deployments scale up and it warms again
    (it takes weight once `traffic show` says warm)."""
    r = _router(ctx)
    live = list(r.releases)
    await r.change(
        lambda s: policy.restore(s, body.release, live, time.time()), "release.restore"
    )
    return r.describe()
