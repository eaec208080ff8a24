"""The quality gate of a promote: a candidate's stored eval against the stable
release's, on the same question set, under `releases.quality`.

Knows the policy (largest drop per metric) and the part of an eval result it
reads (`set.sha256`, `top_k`, `headline`: flat metric -> value); knows nothing
of how results are made (`evals`) or where they are kept (`releases.registry`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QualityPolicy(BaseModel):
    """When `ragserve release promote` refuses a candidate (unless --force)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Check stored evals on promote at all.")
    max_drop: dict[str, float] = Field(
        default_factory=lambda: {"hit@1": 0.05, "hit@5": 0.03, "mrr@10": 0.05},
        description="Largest drop allowed per metric, as a fraction (0.03: 3 "
        "points), of the candidate's eval against the stable release's on the "
        "same set and top_k. Names as `ragserve release show` prints them "
        "(hit@1, hit@5, recall@K, mrr@10, ndcg@10, section.hit@1, "
        "answers.groundedness; for *_rate metrics a rise is the drop).",
    )
    require_eval: bool = Field(
        False,
        description="Refuse a candidate that has no stored eval on any set the "
        "stable release was evaluated on.",
    )


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_rate")


def delta_points(metric: str, stable: float, candidate: float) -> float:
    """How much better the candidate is, in points (negative: worse)."""
    diff = candidate - stable
    return 100 * (-diff if lower_is_better(metric) else diff)


def breaches(
    policy: QualityPolicy,
    stable: dict[str, dict[str, Any]],
    candidate: dict[str, dict[str, Any]],
) -> list[str]:
    """One line per metric the candidate lost more than allowed, on each set
    both were evaluated on (results keyed as the registry keys them)."""
    if not policy.enabled:
        return []
    common = sorted(set(stable) & set(candidate))
    if policy.require_eval and stable and not common:
        return [
            "no stored eval on any set the stable release was evaluated on "
            f"({', '.join(sorted(stable))}); run `ragserve eval --release NAME`"
        ]
    out = []
    for key in common:
        mine, theirs = candidate[key]["headline"], stable[key]["headline"]
        for metric, allowed in sorted(policy.max_drop.items()):
            if metric not in mine or metric not in theirs:
                continue
            delta = delta_points(metric, theirs[metric], mine[metric])
            if -delta > 100 * allowed + 1e-9:
                name = candidate[key]["set"]["name"]
                out.append(
                    f"{metric} {mine[metric]:.3f} vs stable {theirs[metric]:.3f} "
                    f"({delta:+.1f} points, at most -{100 * allowed:.1f} allowed) "
                    f"on set {name} ({key})"
                )
    return out


def deltas(
    a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]
) -> list[tuple[str, str, float, float, float]]:
    """(key, metric, a, b, points better in b) for every shared metric."""
    rows = []
    for key in sorted(set(a) & set(b)):
        x, y = a[key]["headline"], b[key]["headline"]
        for metric in x:
            if metric in y:
                rows.append(
                    (
                        key,
                        metric,
                        x[metric],
                        y[metric],
                        delta_points(metric, x[metric], y[metric]),
                    )
                )
    return rows
