"""Building a release from its parts, validated before anything is written.

Knows which artifacts a release pins and the checks that make one servable
(the index was built with this embedder, the template exists, the model
folders are readable); the caller hands in the config it serves with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.errors import ModelError
from models.resolve import resolve_embedder_path, resolve_generator_path
from releases.artifacts import (
    Artifact,
    index_artifact,
    model_artifact,
    runtime_artifact,
    settings_artifact,
    template_artifact,
)
from releases.errors import ReleaseError
from releases.manifest import ReleaseManifest, check_name
from releases.templates import get_template
from retrieval.errors import RetrievalError
from retrieval.manifest import read_manifest


def build_release(
    name: str,
    index_dir: str,
    models: dict[str, Any],
    settings: dict[str, Any],
    prompt_template: str,
    parent: str | None = None,
    image_digest: str | None = None,
) -> ReleaseManifest:
    """Pin every artifact of a release.

    Args:
        name: the release name.
        index_dir: an index folder from `ragserve index build`.
        models: `{"embedder": {...}, "reranker": {...}, "generator": {...}}`
            model config sections (their `model` fields name the models).
        settings: the per-node config the release serves with.
        prompt_template: a template id of `releases.templates`.
        parent: the release this one derives from.
        image_digest: the container image, when known.

    Raises:
        ReleaseError: a bad name, an index built with another embedder, an
            unknown template or an unreadable model.
    """
    try:
        check_name(name)
        template = get_template(prompt_template)
    except ValueError as exc:
        raise ReleaseError(str(exc)) from None
    try:
        index = read_manifest(index_dir)
        embedder_path, embedder_id = resolve_embedder_path(models["embedder"]["model"])
        generator_path = resolve_generator_path(models["generator"]["model"])
    except (RetrievalError, ModelError) as exc:
        raise ReleaseError(str(exc)) from None
    if index.embedder_model_id != embedder_id:
        raise ReleaseError(
            f"index {index_dir} was built with embedder {index.embedder_model_id}, "
            f"but the release names embedder {embedder_id}; rebuild the index or "
            "pass the matching embedder"
        )
    models = {k: dict(v) for k, v in models.items()}
    # Local folders are pinned by absolute path: a release serves from any cwd.
    for kind, path in (("embedder", embedder_path), ("generator", generator_path)):
        if models[kind]["model"] != "default" and Path(path).is_dir():
            models[kind]["model"] = str(Path(path).resolve())
    artifacts: dict[str, Artifact] = {
        "embedder": model_artifact(
            "embedder", embedder_id, embedder_path, models["embedder"]
        ),
        "index": index_artifact(index_dir),
        "reranker": _reranker(models["reranker"], embedder_id),
        "generator": model_artifact(
            "generator",
            models["generator"]["model"],
            generator_path,
            models["generator"],
        ),
        "prompt_template": template_artifact(template),
        "config": settings_artifact(settings),
        "runtime": runtime_artifact(image_digest),
    }
    return ReleaseManifest.create(name, artifacts, parent)


def _reranker(config: dict[str, Any], embedder_id: str) -> Artifact:
    if config.get("kind") == "cross-encoder" and config.get("model"):
        from models.resolve import resolve_local_or_hub

        try:
            path = resolve_local_or_hub(config["model"], "reranker")
        except ModelError as exc:
            raise ReleaseError(str(exc)) from None
        return model_artifact("reranker", config["model"], path, config)
    return Artifact(
        kind="reranker",
        identity=f"fusion(bm25+{embedder_id})",
        details=config,
    )
