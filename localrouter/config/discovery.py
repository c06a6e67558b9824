"""Local servers found by themselves (`discovery:`): which loopback ports are probed, how
often, and whether what is found is listed."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Ollama, LM Studio, llama.cpp (and many others), vLLM, Jan, text-generation-webui,
# KoboldCpp, GPT4All, SGLang, LocalAI.
DEFAULT_PORTS = (11434, 1234, 8080, 8000, 1337, 5000, 5001, 4891, 30000, 8081)


class DiscoverySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval_seconds: float = Field(default=60.0, ge=1)
    # Loopback by default: probing another machine is the user's explicit choice.
    hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: list(DEFAULT_PORTS)
    )
    expose: bool = True  # what is found is listed in /v1/models (else only /api/discovery)
