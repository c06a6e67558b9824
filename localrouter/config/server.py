"""The `server` section: where the daemon listens, who may call it, and what a bind beyond
loopback means."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# The bind addresses that accept connections on every interface.
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8741, ge=0, le=65535)
    auth_token: SecretStr | None = None
    models_deadline_seconds: float = Field(default=2.5, gt=0)
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed to call
    # Host names clients may use besides loopback, server.host and (on a wildcard bind) this
    # machine's own name and addresses: e.g. the name a reverse proxy or a LAN uses.
    allowed_hosts: list[str] = Field(default_factory=list)
    # A second listener serving the same API, for Ollama clients that cannot change the port
    # (11434); tokenless requests on it act as the client named by ollama_client.
    ollama_port: int | None = Field(default=None, ge=1, le=65535)
    ollama_client: str | None = None

    @property
    def binds_beyond_loopback(self) -> bool:
        return self.host.strip("[]").lower() not in ("localhost", "127.0.0.1", "::1")

    def exposure_warning(self) -> str | None:
        """A warning when other machines can connect and nothing asks them for a token."""
        if not self.binds_beyond_loopback or self.auth_token is not None:
            return None
        return (
            f"server.host {self.host or '(all addresses)'} accepts connections from other "
            "machines and server.auth_token is not set: anyone who can reach this port can use "
            "every configured key; set server.auth_token, or bind 127.0.0.1"
        )
