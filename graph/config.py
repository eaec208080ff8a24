"""`RagServingArgs`: the one config schema, loadable from YAML, a dict or CLI flags.

Every section forbids unknown keys, so a typo in YAML is an error, not a
silently ignored default. KubeRay's `serveConfigV2` passes the same schema as
`args:` to `graph.serve.builder:build_app`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from batching.config import BatchingConfig, merge_over_node_defaults
from graph.layout import LayoutConfig
from graph.limits_config import LimitsConfig
from graph.resilience_config import ResilienceConfig
from graph.server_config import ServerConfig
from models.config import EmbedderConfig, GeneratorConfig, RerankerConfig
from releases.config import ReleasesConfig
from retrieval.config import IndexBuildConfig
from telemetry.config import TelemetryConfig
from tenants.config import TenantsConfig


class ConfigError(Exception):
    """A config that cannot be loaded; the message is one line a user can act on."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def default_cache_dir() -> Path:
    """`$RAGSERVE_CACHE_DIR`, else `~/.cache/ragserve`."""
    return Path(
        os.environ.get("RAGSERVE_CACHE_DIR") or "~/.cache/ragserve"
    ).expanduser()


class _PerNodeDefaults(_Section):
    """Sections whose nodes have their own defaults: a partial node in YAML
    (`generator: {num_gpus: 1}`) is merged over that node's defaults instead of
    replacing them with the generic ones."""

    @model_validator(mode="before")
    @classmethod
    def _merge_over_node_defaults(cls, data: Any) -> Any:
        return merge_over_node_defaults(cls, data)


class ModelsConfig(_Section):
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)


class RetrievalConfig(_Section):
    index_dir: str = Field(
        default_factory=lambda: str(default_cache_dir() / "index" / "docs"),
        description="Folder written by `ragserve index build`.",
    )
    top_k: int = Field(12, ge=1, le=1000, description="Chunks retrieved per query.")
    top_n: int = Field(3, ge=1, le=100, description="Chunks kept after reranking.")
    rerank: bool = Field(True, description="Rerank retrieved chunks.")
    mode: Literal["dense", "sparse", "hybrid"] = Field(
        "dense",
        description="First stage: 'dense' (FAISS over the query vector), "
        "'sparse' (BM25 over the chunk texts, stored with the index) or "
        "'hybrid' (both top_k lists fused by reciprocal rank fusion); the "
        "reranker then runs as configured. sparse and hybrid need an index "
        "built or updated by this ragserve (format 2).",
    )
    rrf_k: int = Field(
        60,
        ge=1,
        description="Reciprocal rank fusion constant for mode 'hybrid': a "
        "chunk scores 1/(rrf_k + rank) in each list.",
    )
    max_context_chars: int = Field(
        4000, ge=100, description="Characters of retrieved text put in the prompt."
    )
    prompt_template: str = Field(
        "rag-v1", description="Versioned prompt template (releases/templates.py)."
    )
    build: IndexBuildConfig = Field(
        default_factory=IndexBuildConfig,
        description="How `ragserve index build` chunks and indexes documents.",
    )
    use_gpu: Literal["auto", "never", "always"] = Field(
        "auto", description="FAISS on GPU: 'auto', 'never' or 'always'."
    )

    @model_validator(mode="after")
    def _top_n_within_top_k(self) -> RetrievalConfig:
        if self.top_n > self.top_k:
            raise ValueError(
                f"retrieval.top_n ({self.top_n}) must not exceed retrieval.top_k "
                f"({self.top_k})"
            )
        return self


class AutoscalingConfig(_Section):
    min_replicas: int = Field(1, ge=0, description="Replicas kept when idle.")
    max_replicas: int = Field(1, ge=1, description="Replicas at most.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start.")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Ongoing requests per replica the autoscaler aims at."
    )
    upscale_delay_s: float = Field(5.0, ge=0, description="Load must last this long.")
    downscale_delay_s: float = Field(30.0, ge=0, description="Idle this long first.")
    look_back_period_s: float = Field(
        30.0,
        gt=0,
        description="Window the ongoing-request average is taken over; "
        "decisions lag load by up to this.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) exceeds "
                f"autoscaling.max_replicas ({self.max_replicas})"
            )
        return self


class DeploymentConfig(_Section):
    """Resources and scaling of one node."""

    num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs (or a fraction) per replica.")
    memory_bytes: int | None = Field(None, ge=0, description="Memory reserved.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica, e.g. {generator_node: 1}: "
        "the replica runs only on nodes that offer them.",
    )
    num_replicas: int | None = Field(
        None, ge=1, description="Fixed replica count; null uses `autoscaling`."
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests a replica works on at once."
    )
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description="Requests waiting per caller before 503 (-1: unbounded).",
    )
    health_check_period_s: float = Field(10.0, gt=0, description="Health checks.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="Health timeout.")
    env_vars: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the replicas."
    )

    def serve_options(self, name: str, extra_env: dict[str, str] | None = None) -> dict:
        """Keyword arguments for `Deployment.options()`."""
        ray_actor_options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
        }
        if self.memory_bytes:
            ray_actor_options["memory"] = self.memory_bytes
        if self.resources:
            ray_actor_options["resources"] = dict(self.resources)
        env = {**(extra_env or {}), **self.env_vars}
        if env:
            ray_actor_options["runtime_env"] = {"env_vars": env}
        options: dict[str, Any] = {
            "name": name,
            "ray_actor_options": ray_actor_options,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
        }
        if self.num_replicas is not None:
            options["num_replicas"] = self.num_replicas
        else:
            options["autoscaling_config"] = self.autoscaling.model_dump(
                exclude_none=True
            )
        return options


def _node(num_cpus: float, autoscaling: dict[str, Any], **kwargs: Any) -> Any:
    return lambda: DeploymentConfig(
        num_cpus=num_cpus, autoscaling=AutoscalingConfig(**autoscaling), **kwargs
    )


class DeploymentsConfig(_PerNodeDefaults):
    """Per-node defaults. Batched nodes scale on batch fill (target about half
    a full batch of ongoing requests); the generator on the sequences its
    engine batches (`max_num_seqs`). At max replicas the CPU graph still fits
    2 CPUs."""

    ingress: DeploymentConfig = Field(
        default_factory=_node(
            0.05,
            {"max_replicas": 2, "target_ongoing_requests": 64},
            max_ongoing_requests=256,
        )
    )
    embedder: DeploymentConfig = Field(
        default_factory=_node(
            0.2,
            {"max_replicas": 2, "target_ongoing_requests": 16},
            max_queued_requests=256,
        )
    )
    retriever: DeploymentConfig = Field(
        default_factory=_node(
            0.05,
            {"max_replicas": 2, "target_ongoing_requests": 32},
            max_queued_requests=256,
        )
    )
    reranker: DeploymentConfig = Field(
        default_factory=_node(
            0.2,
            {"max_replicas": 2, "target_ongoing_requests": 8},
            max_queued_requests=256,
        )
    )
    generator: DeploymentConfig = Field(
        default_factory=_node(
            1.0,
            {"max_replicas": 1, "target_ongoing_requests": 16},
            max_ongoing_requests=32,
            max_queued_requests=64,
            health_check_timeout_s=60.0,
        )
    )


class RagServingArgs(_Section):
    """Everything `build_app` needs."""

    models: ModelsConfig = Field(default_factory=ModelsConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployments: DeploymentsConfig = Field(default_factory=DeploymentsConfig)
    layout: LayoutConfig = Field(
        default_factory=LayoutConfig,
        description="Which steps share a deployment (step groups).",
    )
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    tenants: TenantsConfig = Field(default_factory=TenantsConfig)
    releases: ReleasesConfig = Field(default_factory=ReleasesConfig)
    resilience: ResilienceConfig = Field(
        default_factory=ResilienceConfig,
        description="Request deadlines and retries of idempotent steps.",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="What one request may hold; checked before any model work.",
    )

    @model_validator(mode="after")
    def _max_tokens_fit(self) -> RagServingArgs:
        gen = self.models.generator
        if gen.default_max_tokens >= gen.max_model_len:
            raise ValueError(
                f"models.generator.default_max_tokens ({gen.default_max_tokens}) "
                f"must be below models.generator.max_model_len ({gen.max_model_len})"
            )
        return self

    @classmethod
    def load(
        cls,
        source: RagServingArgs | dict[str, Any] | str | Path | None = None,
        overrides: list[str] | None = None,
    ) -> RagServingArgs:
        """Load from an instance, a dict (KubeRay `args`), or a YAML file path.

        Args:
            source: the config; None means all defaults.
            overrides: `section.key=value` strings (value parsed as YAML),
                applied on top, as the CLI's `--set` does.

        Raises:
            ConfigError: unreadable file, bad YAML or an invalid field, with the
                dotted field path in the message.
        """
        if isinstance(source, RagServingArgs):
            data: dict[str, Any] = source.model_dump()
        elif isinstance(source, dict):
            data = dict(source)
        elif source is None:
            data = {}
        else:
            data = _read_yaml(Path(source))
        for item in overrides or []:
            _apply_override(data, item)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None

    def to_yaml(self) -> str:
        """The config as YAML, API keys redacted (keys are never printed)."""
        data = self.model_dump(mode="json")
        data["server"]["api_keys"] = ["<redacted>" for _ in self.server.api_keys]
        return yaml.safe_dump(data, sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


# `--set` and the merges above stay hand-written: pydantic-settings' CLI source
# would replace the `--set section.key=value` interface with flags of its own,
# and OmegaConf's from_dotlist/merge would bring `${...}` interpolation to every
# string value (prompt templates, URLs) for a few lines over a plain dict that
# pydantic then validates.
def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown config key (check its spelling and section)"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        # Cross-field messages already name their fields.
        problems.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
    return "invalid config: " + "; ".join(problems)
