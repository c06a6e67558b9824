"""Keeping secrets out of text that leaves the process (logs, errors, responses)."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "***"
# Shorter values (e.g. "x" in a test config) would redact ordinary words.
_MIN_SECRET_LENGTH = 6


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return text
