"""The fleet's settings (`fleet:`): several daemons sharing lists, locks, key cooldowns and
usage totals through one Redis (lists/fleet.py)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class FleetSettings(BaseModel):
    """Several daemons sharing lists, locks and key cooldowns through one Redis (fleet.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: SecretStr | None = None  # may hold a password: a secret, never shown
    key_prefix: str = Field(default="localrouter:", min_length=1, max_length=64)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        if not value.get_secret_value().startswith(REDIS_SCHEMES):
            raise ValueError(f"expected a {', '.join(REDIS_SCHEMES)} URL (not shown)")
        try:
            import redis.asyncio  # noqa: F401  (only checked: fleet.py imports it when used)
        except ImportError:
            raise ValueError(
                "needs the redis client, an optional extra: pip install 'localrouter[fleet]'"
            ) from None
        return value

    @property
    def enabled(self) -> bool:
        return self.redis_url is not None

    @property
    def secret_values(self) -> tuple[str, ...]:
        """The password in redis_url, as written and as Redis receives it (unquoted)."""
        if self.redis_url is None:
            return ()
        password = urlsplit(self.redis_url.get_secret_value()).password
        return (password, unquote(password)) if password else ()
