"""The request log's settings (`request_log:`): its metadata is the usage ledger's records;
bodies are opt-in, kept in the same file for fewer days."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RequestLogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # off: the usage ledger alone (no live stream, no bodies)
    bodies: Literal["off", "errors", "all"] = "off"
    max_body_bytes: int = Field(default=256 * 1024, gt=0)  # each body, after redaction
    body_retention_days: float = Field(default=7, gt=0)

    @field_validator("bodies", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false
