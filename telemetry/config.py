"""Telemetry config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TelemetryConfig(BaseModel):
    """Where traces go and how many are kept."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP endpoint for traces; null reads the standard "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT. "
        "Tracing is off when none is set.",
    )
    otlp_protocol: str | None = Field(
        None,
        description="'grpc' or 'http/protobuf'; null reads "
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL "
        "(default grpc).",
    )
    sampling_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Fraction of new traces kept."
    )
    service_name: str = Field("ragserve", description="OTel service.name.")
