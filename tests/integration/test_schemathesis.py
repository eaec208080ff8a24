"""schemathesis over the real graph: every check, a bounded number of examples,
zero failures.

It reads `/openapi.json` from the session graph and sends what the document
allows and what it forbids; a 5xx, an undocumented status, a body off its
schema, or valid data refused (invalid data accepted) fails the run.
schemathesis lives in its own venv (`make schemathesis`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
VENV = ".venv-schemathesis/bin/schemathesis"
#: Examples per operation and phase: enough to reach every field's bounds
#: (the coverage phase adds them), few enough for ~2 minutes on 2 cores.
MAX_EXAMPLES = 8


def schemathesis_bin() -> Path:
    """$RAGSERVE_SCHEMATHESIS, this repo's venv, or one beside the test venv."""
    candidates = [
        os.environ.get("RAGSERVE_SCHEMATHESIS"),
        REPO / VENV,
        Path(sys.prefix).parent / VENV,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail(f"schemathesis not found ({REPO / VENV}): run `make schemathesis`")


#: More than one seed: each explores other data (and the coverage phase's
#: boundaries the same way), so a defect one seed misses another may find.
SEEDS = (20261201, 20261207)


def run_schemathesis(url: str, tmp_path: Path, seed: int, *filters: str) -> str:
    """schemathesis with every check over the operations `filters` (its own
    options, e.g. `--include-path-regex ^/admin/`) select; fails the test on
    any finding."""
    command = [
        str(schemathesis_bin()),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        *filters,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(seed),
        "--workers",
        "2",
        # Data generation is slow on a busy 2-core machine; that is no defect.
        "--suppress-health-check",
        "too_slow",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    output = run.stdout + run.stderr
    print(output[-4000:])
    assert run.returncode == 0, output[-12000:]
    assert "passed" in output
    return output


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_schemathesis_finds_nothing(
    serve_graph: dict[str, Any], tmp_path: Path, seed: int
) -> None:
    # /admin/* changes the live traffic, so it runs against a graph of its
    # own (tests/integration/test_schemathesis_admin.py), never this shared one.
    run_schemathesis(
        serve_graph["url"], tmp_path, seed, "--exclude-path-regex", "^/admin/"
    )
