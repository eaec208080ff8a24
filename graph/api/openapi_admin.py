"""The admin routes' part of the OpenAPI document: the live release names a
change may name, weights that sum to 100, and the statuses a change answers.

Knows the rules of `releases.traffic` as JSON Schema can say them; knows
nothing of how a change is applied.
"""

from __future__ import annotations

from typing import Any

#: JSON Schema has no sums: weights are enumerated while this few releases
#: are live (101 splits of two), else the rule is in the description only.
ENUMERATED_UP_TO = 2

#: Statuses of every admin change, besides its 200 and the common ones.
CHANGE_ERRORS = (409, 503)


def admin_errors(path: str, method: str) -> tuple[int, ...]:
    """The statuses an admin operation answers beyond 400/404/413/500."""
    return CHANGE_ERRORS if path.startswith("/admin/") and method == "post" else ()


def describe_live(components: dict[str, Any], live: list[str]) -> None:
    """Constrain the admin bodies to what `live` releases make valid."""
    release = components["Promotion"]["properties"]["release"]
    release["enum"] = list(live)
    change = components["TrafficChange"]["properties"]
    for field in ("weights", "shadow"):
        change[field]["propertyNames"] = {"enum": list(live)}
    if len(live) <= ENUMERATED_UP_TO:
        change["weights"]["anyOf"] = list(_splits(live))


def _splits(live: list[str]) -> Any:
    """Every weights object over `live` that sums to 100 (names left out
    get 0)."""

    def exactly(weights: dict[str, int]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {n: {"const": w} for n, w in weights.items()},
            "required": list(weights),
            "additionalProperties": False,
        }

    for name in live:
        yield exactly({name: 100})
    if len(live) == 2:
        first, second = live
        for percent in range(101):
            yield exactly({first: percent, second: 100 - percent})
