"""The `ragserve` command line: bad input gives one line and a non-zero exit,
nothing half-written; `ask` answers in one process (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graph.cli.main import main
from tests.conftest import DOCS
from tests.factories_retrieval import build_tiny_cross_encoder, write_tree


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ragserve: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_index_build_missing_docs_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "idx"
    code, _, err = run_cli(
        capsys, "index", "build", "--docs", str(tmp_path / "nope"), "--out", str(out)
    )
    assert_one_line_error(code, err, "--docs")
    assert not out.exists()


def test_index_build_empty_and_binary_docs(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "idx"
    code, _, err = run_cli(
        capsys, "index", "build", "--docs", str(empty), "--out", str(out)
    )
    assert_one_line_error(code, err)
    assert not out.exists()
    docs = write_tree(
        tmp_path / "docs", {"a.md": "# A\nhello", "blob.txt": b"\x00\x01\xff"}
    )
    code, _, err = run_cli(
        capsys, "index", "build", "--docs", str(docs), "--out", str(out)
    )
    assert_one_line_error(code, err, "blob.txt")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "docs",
        "empty",
    ]  # no temp left


def test_unknown_config_key_and_bad_yaml(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "config", "show", "--set", "retrieval.top_kk=3")
    assert_one_line_error(code, err, "retrieval.top_kk", "unknown config key")
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval: [top_k\n")
    code, _, err = run_cli(capsys, "config", "show", "--config", str(bad))
    assert_one_line_error(code, err, "not valid YAML")
    code, _, err = run_cli(
        capsys, "config", "show", "--config", str(tmp_path / "missing.yaml")
    )
    assert_one_line_error(code, err, "cannot read config file")


def test_config_show_round_trips(tmp_path: Path, capsys) -> None:
    from graph.config import RagServingArgs

    code, out, _ = run_cli(capsys, "config", "show", "--set", "retrieval.top_k=20")
    assert code == 0
    saved = tmp_path / "c.yaml"
    saved.write_text(out)
    assert RagServingArgs.load(saved).retrieval.top_k == 20


def test_serve_refuses_a_missing_index_before_starting_ray(
    tmp_path: Path, capsys
) -> None:
    code, _, err = run_cli(capsys, "serve", "--index", str(tmp_path / "none"))
    assert_one_line_error(code, err, "ragserve index build")


def test_ask_with_another_embedder_than_the_index(
    docs_index: Path, tmp_path: Path, capsys
) -> None:
    other = build_tiny_cross_encoder(tmp_path / "tiny-bert")  # a 32-d encoder
    code, _, err = run_cli(
        capsys, "ask", "--index", str(docs_index), "--embedder", str(other), "hi"
    )
    assert_one_line_error(code, err, "sentence-transformers/all-MiniLM-L6-v2")


def test_ask_with_a_missing_model_path(
    docs_index: Path, tmp_path: Path, capsys
) -> None:
    code, _, err = run_cli(
        capsys,
        "ask",
        "--index",
        str(docs_index),
        "--model",
        str(tmp_path / "no-model"),
        "hi",
    )
    assert_one_line_error(code, err, "no-model", "does not exist")


def test_ask_empty_question(capsys) -> None:
    code, _, err = run_cli(capsys, "ask", "   ")
    assert_one_line_error(code, err, "question is empty")


def _ask(index: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "graph.cli.main",
            "ask",
            "--index",
            str(index),
            *extra,
            "How does ragserve batch requests?",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=DOCS.parent,
    )


def test_ask_streams_an_answer_with_citations_tiny_model(
    docs_index: Path, tiny_llama: Path
) -> None:
    done = _ask(
        docs_index,
        "--model",
        str(tiny_llama),
        "--max-tokens",
        "12",
        "--set",
        "models.generator.max_model_len=1024",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer, _, sources = done.stdout.partition("\nSources:\n")
    assert answer.strip()
    assert "batching.md" in sources
    assert "first token" in done.stderr and "tok/s" in done.stderr


@pytest.mark.slow
def test_ask_with_the_real_default_smollm2(docs_index: Path) -> None:
    """The default generator, SmolLM2-135M-Instruct on vLLM, end to end."""
    done = _ask(docs_index, "--max-tokens", "48")
    assert done.returncode == 0, done.stderr[-2000:]
    answer, _, sources = done.stdout.partition("\nSources:\n")
    words = answer.split()
    assert len(words) >= 5, answer
    assert "[1] batching.md" in sources
    print(done.stdout, done.stderr.strip().splitlines()[-1])


def test_serve_starts_ray_in_serves_throughput_mode_unless_told(monkeypatch) -> None:
    from graph.cli.server import LEAN_ENV, THROUGHPUT_ENV, serve_env
    from graph.config import RagServingArgs

    env: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", env)  # what serve_env sets stays here
    off = {"throughput_optimized": False, "lean_control_plane": False}
    serve_env(RagServingArgs.model_validate({"server": {**off, "ingress": "proxy"}}))
    assert env == {}
    env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "0"  # the user's word wins
    serve_env(RagServingArgs.model_validate({"server": {"ingress": "proxy"}}))
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    # Behind Serve's proxy, direct ingress stays off.
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    assert all(env[k] == v for k, v in LEAN_ENV.items())
    # HAProxy (the default) forwards to each ingress replica's own port.
    env.clear()
    serve_env(RagServingArgs())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert set(THROUGHPUT_ENV) <= set(env)
