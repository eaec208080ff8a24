"""The tenants benchmark's own parts that need no graph: config overrides
and the spread of request lengths."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest

from load_tests import tenants_bench


def _ns(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "max_tokens": 32,
        "model": None,
        "index": Path("/idx"),
        "fifo": False,
        "slots": None,
        "reserved_slots": 1,
        "set": [],
    }
    return argparse.Namespace(**{**base, **kw})


def test_set_overrides_nested_config_keys_with_yaml_values(tmp_path: Path) -> None:
    ns = _ns(
        set=[
            "models.generator.threads=1",
            "models.generator.engine_kwargs={max_num_batched_tokens: 256}",
            "tenants.fair_share.enabled=false",
        ]
    )
    cfg = tenants_bench._config(ns, tmp_path, 8011)
    gen = cfg["models"]["generator"]
    assert gen["threads"] == 1
    assert gen["engine_kwargs"] == {"max_num_batched_tokens": 256}
    assert gen["default_max_tokens"] == 32  # the rest of the section stays
    assert cfg["tenants"]["fair_share"]["enabled"] is False


@pytest.mark.parametrize("item", ["threads", "=1", ""])
def test_set_without_key_and_value_is_refused(tmp_path: Path, item: str) -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        tenants_bench._config(_ns(set=[item]), tmp_path, 8011)


def test_length_jitter_out_of_range_is_refused(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        tenants_bench.main(["--index", "/idx", "--length-jitter", "1.5"])
    assert "--length-jitter must be in [0, 1)" in capsys.readouterr().err


def test_request_lengths_spread_by_the_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    async def fake_stream(client: Any, key: str, max_tokens: int) -> tuple[float, int]:
        asked.append(max_tokens)
        await asyncio.sleep(0.001)
        return 0.01, max_tokens

    monkeypatch.setattr(tenants_bench, "_stream", fake_stream)
    ns = argparse.Namespace(phase_s=0.3, max_tokens=32, length_jitter=0.5)
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep(asyncio.sleep))
    out = asyncio.run(tenants_bench._tenant_load("http://x", "k", 2, ns, 1))
    assert out["requests"] == len(asked) > 10
    assert min(asked) >= 16 and max(asked) <= 48
    assert len(set(asked)) > 5  # spread, not one length
    ns0 = argparse.Namespace(phase_s=0.1, max_tokens=32, length_jitter=0.0)
    asked.clear()
    asyncio.run(tenants_bench._tenant_load("http://x", "k", 2, ns0, 1))
    assert set(asked) == {32}  # lockstep: every stream as long as the others


def _fast_sleep(real: Any) -> Any:
    async def sleep(delay: float) -> None:
        await real(min(delay, 0.001))

    return sleep
