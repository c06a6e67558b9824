"""The tracing settings (`telemetry:`): where spans go (OTLP over HTTP), with what headers,
and whether prompts and answers go with them. Needs the optional extra localrouter[otel]."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # e.g. http://127.0.0.1:4318 (a collector) or Langfuse's .../api/public/otel; None: off.
    # Spans go to {otlp_endpoint}/v1/traces (unless it already ends so).
    otlp_endpoint: str | None = None
    headers: dict[str, SecretStr] = {}  # sent to the endpoint (its credentials): secrets
    capture_content: bool = False  # prompts and answers on the spans (off: never)
    service_name: str = "localrouter"
    # How long one export of a batch may take, its retries included (then it is dropped).
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL (OTLP over HTTP)")
        try:  # only checked: telemetry/otel.py imports them when tracing is built
            import opentelemetry.exporter.otlp.proto.http.trace_exporter
            import opentelemetry.sdk.trace  # noqa: F401
        except ImportError:
            raise ValueError(
                "needs the OpenTelemetry SDK, an optional extra: pip install 'localrouter[otel]'"
            ) from None
        return value

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(value.get_secret_value() for value in self.headers.values())
