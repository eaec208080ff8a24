"""Model specs resolve to local folders or hub ids, or fail with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

import models.resolve
from models.errors import ModelNotFoundError
from models.resolve import DEFAULT_GENERATOR_NAME, resolve_generator_path


@pytest.mark.parametrize("spec", ["./no/such/model", "/no/such/model", "~/no-model"])
def test_missing_path_is_model_not_found(spec: str) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as raised:
        resolve_generator_path(spec)
    assert spec in str(raised.value)


def test_hub_id_passes_through() -> None:
    assert (
        resolve_generator_path("Qwen/Qwen2.5-0.5B-Instruct")
        == "Qwen/Qwen2.5-0.5B-Instruct"
    )


def test_existing_folder_resolves_to_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert resolve_generator_path("my-model") == str(model.resolve())
    assert resolve_generator_path("./my-model/") == str(model.resolve())
    assert resolve_generator_path("~/my-model") == str(model.resolve())


def test_default_is_the_converted_smollm2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted = tmp_path / DEFAULT_GENERATOR_NAME
    monkeypatch.setattr(models.resolve, "ensure_smollm2", lambda: converted)

    assert resolve_generator_path("default") == str(converted)
    assert DEFAULT_GENERATOR_NAME == "SmolLM2-135M-Instruct"
