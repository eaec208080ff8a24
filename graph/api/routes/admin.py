"""`/admin/traffic`, `/admin/promote`, `/admin/rollback`, `/admin/restore`:
the live weights and the releases they keep deployed.

What `ragserve traffic` and `ragserve release promote|rollback` call. A change
is checked against the live releases and their warm-up first (400 naming the
rule, nothing changed), then applied to every ingress replica through Serve's
user_config, and answered once this replica runs with it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from graph.api.context import Ctx, ServingContext
from graph.errors import APIError
from graph.routing.router import ReleaseRouter
from releases import traffic as policy

router = APIRouter()


class TrafficChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, int] = Field(description="Percent per release, sum 100.")
    shadow: dict[str, int] = Field(
        default_factory=dict, description="Mirrored percent per release."
    )


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release: str = Field(description="The live release to take all traffic.")


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
