"""Bad configuration, walked: every config key of the schema, every typed CLI
flag and every environment variable, given an invalid value, is one line
naming it and a non-zero exit before anything starts (no Ray, no model)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from graph.cli import main as cli
from graph.cli.env import ENV_VARS
from graph.config import RagServingArgs

REPO = Path(__file__).resolve().parents[2]
#: Values no typed field takes: a mapping where a scalar or list is expected,
#: a list where a mapping is, a number below every bound, a word for a number.
CANDIDATES = ("{bad: 1}", "[1]", "-1", "not-a-valid-value")


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the CLI wrongly takes fails here, not by starting a graph."""

    def started(*_: Any, **__: Any) -> None:
        raise AssertionError("the command started with an invalid value")

    monkeypatch.setattr("graph.cli.server.run_until_signal", started)
    for var in ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)


def leaves(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every config key of `model`, dotted, down to the fields that hold values."""
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from leaves(kind, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str | None:
    """The one error line of `ragserve argv`, None when it succeeded."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    if code == 0:
        return None
    assert code == 2, (argv, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragserve: error: "), (argv, err)
    return lines[0]


def test_every_config_key_refuses_an_invalid_value_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = list(leaves(RagServingArgs))
    assert len(keys) > 100  # the whole schema, not a sample
    unrefused = []
    for key in keys:
        named = False
        for bad in CANDIDATES:
            line = one_error(capsys, ["config", "show", "--set", f"{key}={bad}"])
            if line is not None:
                assert key in line or key.rsplit(".", 1)[0] in line, (key, line)
                named = True
                break
        if not named:
            unrefused.append(key)
    assert unrefused == []


def typed_flags() -> Iterator[tuple[list[str], str, str]]:
    """(the subcommand with what else it requires, flag, an invalid value)
    for every flag of every subcommand whose values have a type or choices."""

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[Any]:
        needed = list(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.option_strings:
                needed.append("X")  # a positional: a name, a question, ...
            elif action.required:
                needed += [action.option_strings[-1], "/nonexistent"]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, [*path, name])
            elif action.option_strings and (action.type or action.choices):
                flag = action.option_strings[-1]
                bad = "-5" if action.choices is None else "no-such"
                yield needed, flag, "x" if flag == "--seed" else bad

    yield from walk(cli.build_parser(), [])


def test_every_typed_flag_refuses_an_invalid_value_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = list(typed_flags())
    assert len(flags) >= 10
    for path, flag, bad in flags:  # any integer is a --seed; a word is not
        line = one_error(capsys, [*path, flag, bad])
        assert line is not None, (path, flag, bad)
        assert flag in line, (path, flag, line)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--port", "0"], "--port (server.port)"),
        (["serve", "--port", "70000"], "--port (server.port)"),
        (["serve", "--address", "nowhere"], "--address"),
        (["serve", "--set", "server.port=x"], "server.port"),
        (["serve", "--set", "models.generator.max_model_len=0"], "max_model_len"),
        (["serve", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
    ],
)
def test_serve_refuses_before_it_starts(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    line = one_error(capsys, argv)
    assert line is not None and needle in line, line


def test_every_environment_variable_refuses_an_unusable_value_by_name(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad = {
        "RAGSERVE_API_KEYS": "a,,b",
        "RAGSERVE_AUDIT_LOG": str(tmp_path),
        "RAGSERVE_CACHE_DIR": str(a_file),
        "RAGSERVE_DATA_DIR": str(a_file),
        "RAGSERVE_IMAGE_DIGEST": "latest",
        "RAGSERVE_JAEGER_URL": "localhost:16686",
        "RAGSERVE_MALLOC_TRIM_S": "often",
        "RAGSERVE_REGISTRY": str(a_file),
        "RAGSERVE_TENANTS_DB": "not a url",
        "RAGSERVE_URL": "http://127.0.0.1:port",
    }
    free_text = {"RAGSERVE_API_KEY"}  # any token is a key
    assert set(bad) | free_text == {v.name for v in ENV_VARS}
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
        line = one_error(capsys, ["config", "show"])
        assert line is not None and name in line, (name, line)
        monkeypatch.delenv(name)
    assert one_error(capsys, ["config", "show"]) is None


def test_the_source_reads_no_other_ragserve_variable() -> None:
    known = {v.name for v in ENV_VARS}
    seen: set[str] = set()
    for package in ("graph", "models", "tenants", "releases", "telemetry"):
        for path in (REPO / package).rglob("*.py"):
            seen |= set(re.findall(r"RAGSERVE_[A-Z_]+", path.read_text()))
    assert seen <= known, seen - known
