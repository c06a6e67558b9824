"""The web console's settings (`console:`): the daemon serves it at /ui."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
