"""An eval result as a table, as flat metrics, and written to a file atomically.

Knows the result's shape (`evals.runner`) and how to print it; knows nothing
of how it was produced.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The order the release serves (reranked when it reranks, else dense) at
    document level, plus its section level as `section.<metric>`, plus the
    answer rates: the metrics a quality policy names."""
    retrieval = result["retrieval"]
    served = retrieval.get("reranked") or retrieval["dense"]
    out = {name: float(v) for name, v in served["doc"].items()}
    for name, v in served.get("section", {}).items():
        out[f"section.{name}"] = float(v)
    answers = result.get("answers") or {}
    for name in ("refusal_rate", "empty_rate", "groundedness"):
        if answers.get(name) is not None:
            out[f"answers.{name}"] = float(answers[name])
    return out


def flat(result: dict[str, Any]) -> dict[str, float]:
    """Every retrieval metric as `<order>.<level>.<metric>`."""
    return {
        f"{order}.{level}.{name}": float(v)
        for order, by_level in result["retrieval"].items()
        for level, metrics in by_level.items()
        for name, v in metrics.items()
    }


def render_table(result: dict[str, Any]) -> str:
    """The result as a few aligned text tables."""
    s, t = result["set"], result["target"]
    lines = [
        f"set {s['name']} ({s['questions']} questions, sha256 {s['sha256'][:12]}) "
        f"on {t.get('release') or t.get('index') or t.get('url')}  top_k "
        f"{result['top_k']}",
    ]
    rows = [
        (f"{order} / {level}", metrics)
        for order, by_level in result["retrieval"].items()
        for level, metrics in by_level.items()
    ]
    names = list(rows[0][1])
    lines.append(f"{'retrieval':<20}" + "".join(f"{n:>11}" for n in names))
    for label, metrics in rows:
        lines.append(f"{label:<20}" + "".join(f"{metrics[n]:>11.3f}" for n in names))
    answers = result.get("answers")
    if answers:
        lines.append(
            f"answers ({answers['questions']}): refusal {answers['refusal_rate']:.0%}"
            f"  empty {answers['empty_rate']:.0%}  uncited "
            f"{answers['uncited_rate']:.0%}  citation precision "
            + ", ".join(
                f"{lvl} {_num(v)}" for lvl, v in answers["citation_precision"].items()
            )
            + f"  groundedness {_num(answers['groundedness'])}"
            f"  reference recall {_num(answers['reference_recall'])}"
            f"  mean {answers['mean_chars']:.0f} chars"
        )
    lines.append(f"{'latency ms':<20}{'n':>6}{'p50':>10}{'p95':>10}{'mean':>10}")
    for step, v in result["latency_ms"].items():
        if v.get("n"):
            lines.append(
                f"{step:<20}{v['n']:>6}{v['p50']:>10.1f}{v['p95']:>10.1f}"
                f"{v['mean']:>10.1f}"
            )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as JSON to `path` atomically (temporary file, fsync, rename)."""
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
