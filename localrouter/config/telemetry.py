"""The tracing settings (`telemetry:`): where spans go (OTLP over HTTP), with what headers,
and whether prompts and answers go with them. Needs the optional extra localrouter[otel]."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # e.g. http://127.0.0.1:4318 (a collector) or Langfuse's .../api/public/otel; None: off
    otlp_endpoint: str | None = None
    headers: dict[str, SecretStr] = {}  # sent to the endpoint (its credentials): secrets
    capture_content: bool = False  # prompts and answers as span events (off: never)
    service_name: str = "localrouter"

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL (OTLP over HTTP)")
        return value

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(value.get_secret_value() for value in self.headers.values())
