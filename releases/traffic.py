"""Traffic policy: live weights, sticky assignment, pins, shadow, promote and
rollback, as pure functions over `TrafficState` (the ingress's user_config).

Knows the rules (weights are whole percents summing to 100, a release takes
weight only once warm, a shadow never mirrors the release taking all
traffic, a release that lost its traffic retires after its grace period);
knows nothing of HTTP or Ray: every change returns a new state or raises
`TrafficError` and leaves the old one as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from releases.errors import TrafficConflictError, TrafficError

#: Sticky buckets: fine enough that a 1% weight gets its share.
BUCKETS = 10_000


class TrafficState(BaseModel):
    """Live routing of one graph; travels as the ingress's Serve user_config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, int] = Field(description="Percent of requests per release.")
    shadow: dict[str, int] = Field(
        default_factory=dict,
        description="Percent of requests mirrored to a release, answers discarded.",
    )
    stable: str | None = Field(None, description="The release that had 100% last.")
    history: list[str] = Field(
        default_factory=list,
        description="Earlier stable releases, oldest first (rollback targets).",
    )
    reasons: dict[str, str] = Field(
        default_factory=dict,
        description="Why a release lost its weight (canary judge), by release.",
    )
    idle_since: dict[str, float] = Field(
        default_factory=dict,
        description="Unix time a release lost its last traffic (weight and "
        "shadow); it is retired `releases.grace_period_s` later.",
    )
    retired: list[str] = Field(
        default_factory=list,
        description="Releases whose own deployments were scaled to zero after "
        "their grace period; `ragserve release restore` brings one back.",
    )
    revision: int = Field(0, description="Bumped on every change.")

    @classmethod
    def initial(
        cls, releases: list[str], weights: Mapping[str, int] | None = None
    ) -> TrafficState:
        weights = dict(weights or {releases[0]: 100})
        full = {name: int(weights.get(name, 0)) for name in releases}
        _check_weights(full, releases)
        top = max(full, key=lambda n: full[n])
        return cls(weights=full, stable=top if full[top] == 100 else releases[0])


def parse_assignments(items: Iterable[str], what: str = "weight") -> dict[str, int]:
    """`["A=90", "B=10"]` -> `{"A": 90, "B": 10}`.

    Raises:
        TrafficError: not NAME=PERCENT, a repeated name, a negative or
            non-integer percent.
    """
    out: dict[str, int] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise TrafficError(f"{what} {item!r} must be NAME=PERCENT, e.g. A=90")
        try:
            value = int(raw)
        except ValueError:
            raise TrafficError(
                f"{what} for {name!r} must be a whole percent, got {raw!r}"
            ) from None
        if value < 0 or value > 100:
            raise TrafficError(
                f"{what} for {name!r} must be between 0 and 100, got {value}"
            )
        if name in out:
            raise TrafficError(f"{what} for {name!r} is given twice")
        out[name] = value
    return out


def _check_known(names: Iterable[str], live: Iterable[str]) -> None:
    live = list(live)
    for name in names:
        if name not in live:
            raise TrafficError(
                f"release {name!r} is not live in this graph (live: {', '.join(live)})"
            )


def _check_weights(weights: Mapping[str, int], live: Iterable[str]) -> None:
    _check_known(weights, live)
    for name, value in weights.items():
        if value < 0:
            raise TrafficError(f"weight for {name!r} is negative ({value})")
    total = sum(weights.values())
    if total != 100:
        shown = " ".join(f"{n}={w}" for n, w in weights.items())
        raise TrafficError(f"weights must sum to 100, got {total} ({shown})")


def _check_warm(names: Iterable[str], warm: Mapping[str, str]) -> None:
    for name in names:
        state = warm.get(name, "unknown")
        if state == "retired":
            raise TrafficConflictError(
                f"release {name!r} is retired (the deployments only it used were "
                f"scaled to zero after its grace period); `ragserve release "
                f"restore {name}` brings it back, and it takes traffic once warm"
            )
        if state != "warm":
            raise TrafficConflictError(
                f"release {name!r} is not warm yet ({state}); it takes traffic "
                "once its deployments are ready and its warm-up queries passed"
            )


def set_weights(
    state: TrafficState,
    weights: Mapping[str, int],
    shadow: Mapping[str, int] | None,
    warm: Mapping[str, str],
) -> TrafficState:
    """New weights (releases not named get 0) and shadow shares.

    Args:
        state: the live state.
        weights: the requested percents.
        shadow: mirrored percents; None keeps none.
        warm: every live release's warm-up state ("warm" takes traffic).
    """
    live = list(warm)
    _check_weights(weights, live)
    full = {name: int(weights.get(name, 0)) for name in live}
    warm = _with_retired(state, warm)
    _check_warm([n for n, w in full.items() if w > 0], warm)
    shadow = dict(shadow or {})
    _check_known(shadow, live)
    for name, share in shadow.items():
        if full.get(name) == 100:
            raise TrafficConflictError(
                f"release {name!r} already takes all traffic; a shadow share on "
                "it would mirror requests to itself"
            )
        if share <= 0 or share > 100:
            raise TrafficError(f"shadow share for {name!r} must be 1-100, got {share}")
    _check_warm(shadow, warm)
    stable, history = state.stable, list(state.history)
    top = next((n for n, w in full.items() if w == 100), None)
    if top is not None and top != stable:
        if stable is not None:
            history.append(stable)
        stable = top
    reasons = {n: r for n, r in state.reasons.items() if full.get(n, 0) == 0}
    return state.model_copy(
        update={
            "weights": full,
            "shadow": shadow,
            "stable": stable,
            "history": history,
            "reasons": reasons,
            "revision": state.revision + 1,
        }
    )


def promote(state: TrafficState, name: str, warm: Mapping[str, str]) -> TrafficState:
    """`name` to 100% and stable; the previous stable becomes the rollback target."""
    _check_known([name], list(warm))
    if state.stable == name and state.weights.get(name) == 100:
        raise TrafficConflictError(
            f"release {name!r} already takes all traffic; nothing to promote"
        )
    return set_weights(state, {name: 100}, None, warm)


def rollback(state: TrafficState, warm: Mapping[str, str]) -> TrafficState:
    """Back to the stable release when a canary takes weight, else to the
    previous stable release; either gets 100%."""
    live = list(warm)
    if state.stable and state.weights.get(state.stable) != 100:
        target, history = state.stable, list(state.history)
    else:
        history = [n for n in state.history if n in live and n != state.stable]
        if not history:
            raise TrafficConflictError(
                f"nothing to roll back to: {state.stable!r} takes all traffic and "
                "no earlier stable release is live in this graph"
            )
        target = history.pop()
    _check_warm([target], _with_retired(state, warm))
    full = {n: (100 if n == target else 0) for n in live}
    return state.model_copy(
        update={
            "weights": full,
            "shadow": {},
            "stable": target,
            "history": history,
            "revision": state.revision + 1,
        }
    )


def take_weight_away(state: TrafficState, name: str, reason: str) -> TrafficState:
    """The canary judge's move: `name` to 0, its share back to the stable release."""
    stable = state.stable
    if stable is None or stable == name or state.weights.get(name, 0) == 0:
        return state
    weights = dict(state.weights)
    weights[stable] = weights.get(stable, 0) + weights[name]
    weights[name] = 0
    return state.model_copy(
        update={
            "weights": weights,
            "reasons": {**state.reasons, name: reason},
            "revision": state.revision + 1,
        }
    )


def _with_retired(state: TrafficState, warm: Mapping[str, str]) -> dict[str, str]:
    # The state's own word wins over a replica's view of its warm-up.
    return {n: ("retired" if n in state.retired else s) for n, s in warm.items()}


def _has_traffic(state: TrafficState, name: str) -> bool:
    return state.weights.get(name, 0) > 0 or state.shadow.get(name, 0) > 0


def stamp_idle(before: TrafficState, after: TrafficState, now: float) -> TrafficState:
    """`after` with the time each release that just lost all its traffic did
    (its grace period starts), and no time for one that has traffic again."""
    idle = {n: t for n, t in after.idle_since.items() if not _has_traffic(after, n)}
    for name in after.weights:
        if _has_traffic(before, name) and not _has_traffic(after, name):
            idle[name] = now
    if idle == after.idle_since:
        return after
    return after.model_copy(update={"idle_since": idle})


def due_for_retirement(state: TrafficState, grace_s: float, now: float) -> list[str]:
    """Releases idle for at least `grace_s`, not retired yet (oldest first).
    The stable release never retires: rollbacks and the canary judge give
    traffic back to it."""
    return [
        name
        for name, since in sorted(state.idle_since.items(), key=lambda kv: kv[1])
        if now - since >= grace_s
        and name not in state.retired
        and name != state.stable
        and not _has_traffic(state, name)
    ]


def retire(state: TrafficState, name: str) -> TrafficState:
    """`name` retired: the deployments only it uses may scale to zero.

    Raises:
        TrafficError: it still takes traffic, or is retired already.
    """
    if _has_traffic(state, name):
        raise TrafficError(f"release {name!r} still takes traffic; not retired")
    if name in state.retired:
        raise TrafficError(f"release {name!r} is retired already")
    idle = {n: t for n, t in state.idle_since.items() if n != name}
    return state.model_copy(
        update={
            "retired": [*state.retired, name],
            "idle_since": idle,
            "revision": state.revision + 1,
        }
    )


def restore(
    state: TrafficState, name: str, live: Iterable[str], now: float
) -> TrafficState:
    """`name` back from retirement: its deployments return to their configured
    scale; it takes weight again once warm, and its grace period starts over
    at `now` (given no traffic, it retires again).

    Raises:
        TrafficError: not live here, or not retired.
    """
    _check_known([name], live)
    if name not in state.retired:
        raise TrafficConflictError(
            f"release {name!r} is not retired (retired: "
            f"{', '.join(state.retired) or 'none'}); nothing to restore"
        )
    return state.model_copy(
        update={
            "retired": [n for n in state.retired if n != name],
            "idle_since": {**state.idle_since, name: now},
            "revision": state.revision + 1,
        }
    )


def sticky_bucket(key: str) -> int:
    """The bucket (0..BUCKETS-1) a session/user/tenant key always lands in."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % BUCKETS


def choose(weights: Mapping[str, int], bucket: int) -> str:
    """The release whose slice of [0, BUCKETS) holds `bucket` (names in order)."""
    edge = 0
    last = None
    for name in sorted(weights):
        if weights[name] <= 0:
            continue
        last = name
        edge += weights[name] * BUCKETS // 100
        if bucket < edge:
            return name
    if last is None:
        raise TrafficError("no release takes traffic")
    return last


def within(
    weights: Mapping[str, int], allowed: Collection[str], usable: Sequence[str]
) -> dict[str, int]:
    """`weights` over the `allowed` releases only, scaled to sum to 100, so a
    tenant held to some releases splits between them as the weights say; when
    none of them has weight, the `usable` ones equally (a tenant held to a
    release that takes no general traffic still reaches it). Empty when
    neither leaves a release."""
    mine = {n: w for n, w in weights.items() if n in allowed and w > 0}
    if not mine:
        mine = {n: 1 for n in usable}
    if not mine:
        return {}
    total = sum(mine.values())
    scaled = {n: w * 100 // total for n, w in mine.items()}
    left = 100 - sum(scaled.values())  # to the largest remainders
    for n in sorted(mine, key=lambda n: (-(mine[n] * 100 % total), n))[:left]:
        scaled[n] += 1
    return scaled


def effective_weights(
    weights: Mapping[str, int], warm: Mapping[str, str]
) -> dict[str, int]:
    """Weights of warm releases only; when none with weight is warm yet (start
    up), the configured weights stand."""
    usable = {n: w for n, w in weights.items() if w > 0 and warm.get(n) == "warm"}
    return usable or {n: w for n, w in weights.items() if w > 0}
