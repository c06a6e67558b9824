"""Keeping secrets out of text that leaves the process (logs, errors, responses, streams).

Three rules every caller gets from here:
- redact before truncating (`shorten` does both, in that order, and also drops a tail that is
  the start of a secret, for text that was cut before it reached us);
- a secret written with JSON escapes (`\\u0073k-...`, `\\/`) is a secret too: a client's JSON
  decoder would restore it, so text holding escapes is checked in its decoded form;
- a stream is checked event by event (`StreamRedactor`): whole SSE events only, so a secret
  split across two network chunks is still seen, and the scan of a clean event is a few
  substring searches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from yarl import URL

REDACTED = "***"
# Shorter values (e.g. "x" in a test config) would redact ordinary words.
_MIN_SECRET_LENGTH = 6
# A tail this long that starts a secret is dropped by `shorten` (shorter ones are ordinary text).
_MIN_PARTIAL_TAIL = 3
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(match: re.Match[str]) -> str:
    code, simple = match.group(1), match.group(2)
    if code is not None:
        return chr(int(code, 16))
    return _SIMPLE_ESCAPES.get(simple, simple)


def _usable(secrets: Iterable[str]) -> list[str]:
    return [secret for secret in secrets if len(secret) >= _MIN_SECRET_LENGTH]


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by ***; escaped forms are decoded where one hides."""
    usable = _usable(secrets)
    for secret in usable:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if usable and ("\\u" in text or "\\/" in text or _escaped_in(text, usable)):
        decoded = _JSON_ESCAPE.sub(_unescape, text)
        if any(secret in decoded for secret in usable):
            return redact(decoded, usable)  # the decoded text, without its escapes
    return text


def _escaped_in(text: str, secrets: list[str]) -> bool:
    """Whether a secret with characters JSON must escape (`"`, `\\`) is in `text` escaped."""
    return any(
        escaped != secret and escaped in text
        for secret in secrets
        if (escaped := secret.replace("\\", "\\\\").replace('"', '\\"'))
    )


def shorten(text: str, limit: int, secrets: Iterable[str]) -> str:
    """Redact, then cut to `limit` characters, then drop a tail that begins a secret."""
    usable = _usable(secrets)
    text = redact(text, usable)
    if len(text) > limit:
        text = text[:limit] + "..."
    return drop_partial_secret(text, usable)


def drop_partial_secret(text: str, secrets: Iterable[str]) -> str:
    """Remove a tail of `text` that is the beginning of a secret (cut off by a read limit)."""
    for secret in _usable(secrets):
        for size in range(min(len(secret) - 1, len(text)), _MIN_PARTIAL_TAIL - 1, -1):
            if text.endswith(secret[:size]):
                return text[:-size] + REDACTED
    return text


def redact_bytes(data: bytes | bytearray, secrets: Iterable[str]) -> bytes | bytearray:
    """`redact` for a body or a block of SSE events: the same object when no secret is in it.
    JSON (the whole body, or each `data:` line) is redacted value by value and stays JSON."""
    if not secrets:  # the common case of a keyless local upstream, on every answer
        return data
    usable = _usable(secrets)
    if not usable:
        return data
    if not any(secret.encode() in data for secret in usable) and not _may_hide(data, usable):
        return data
    try:
        return orjson.dumps(redact_json(orjson.loads(data), usable))
    except orjson.JSONDecodeError:
        pass
    lines = bytes(data).split(b"\n")
    for index, line in enumerate(lines):
        lines[index] = _redact_line(line, usable)
    return b"\n".join(lines)


def _redact_line(line: bytes, secrets: list[str]) -> bytes:
    if line.startswith(b"data:"):
        payload = line[5:].strip()
        try:
            return b"data: " + orjson.dumps(redact_json(orjson.loads(payload), secrets))
        except orjson.JSONDecodeError:
            pass
    return redact(line.decode("utf-8", "replace"), secrets).encode()


def redact_json(value: Any, secrets: Iterable[str]) -> Any:
    """A decoded JSON value with every string (keys too) redacted."""
    secrets = secrets if isinstance(secrets, list) else _usable(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_json(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(k, secrets): redact_json(v, secrets) for k, v in value.items()}
    return value


def _may_hide(data: bytes | bytearray, secrets: list[str]) -> bool:
    """Whether escapes in `data` could spell a secret: `\\u`, `\\/`, or an escaped `"`/`\\`
    where a secret holds one. A clean stream event passes with a couple of searches."""
    if b"\\u" in data or b"\\/" in data:
        return True
    return any(('"' in secret or "\\" in secret) and b"\\" in data for secret in secrets)


SSE_ENDS = (b"\n\n", b"\r\n\r\n")  # where a server-sent event ends
NDJSON_ENDS = (b"\n",)  # where a line of newline-delimited JSON ends


class StreamRedactor:
    """Redacts a stream event by event (server-sent events, or NDJSON lines with `ends`).

    `feed` returns the complete events received so far (redacted) and keeps an incomplete one
    until its end arrives; `max_event_bytes` bounds what is held, so a stream without event
    boundaries cannot grow memory: past it the held bytes are redacted and let through.
    Without secrets it only cuts the stream into whole events (for what reads them).
    """

    def __init__(
        self,
        secrets: Iterable[str],
        max_event_bytes: int = 1024 * 1024,
        ends: tuple[bytes, ...] = SSE_ENDS,
    ) -> None:
        self._secrets = tuple(_usable(secrets))
        self._max = max_event_bytes
        self._ends = ends
        self._overlap = max(len(end) for end in ends) - 1
        self._held: list[bytes] = []
        self._held_size = 0

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def feed(self, chunk: bytes) -> bytes | bytearray:
        # Only the new chunk (and the last bytes held, for a separator split in two) is searched.
        tail = self._held[-1][-self._overlap :] if self._held and self._overlap else b""
        window = tail + chunk
        found = (window.rfind(end) for end in self._ends)
        cut = max(
            (at + len(end) for at, end in zip(found, self._ends, strict=True) if at >= 0),
            default=-1,
        )
        cut = cut - len(tail) if cut >= 0 else -1
        if cut < 0 and self._held_size + len(chunk) <= self._max:
            self._held.append(chunk)
            self._held_size += len(chunk)
            return b""
        if cut < 0:
            cut = len(chunk)  # no event end within the cap: let it through
        ready = b"".join((*self._held, chunk[:cut])) if self._held else chunk[:cut]
        rest = chunk[cut:]
        self._held = [rest] if rest else []
        self._held_size = len(rest)
        return redact_bytes(ready, self._secrets)

    def finish(self) -> bytes | bytearray:
        held = b"".join(self._held)
        self._held, self._held_size = [], 0
        return redact_bytes(held, self._secrets)


def display_url(url: str | URL) -> str:
    """The URL without credentials or query string, safe for logs and messages."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<an invalid URL>"
    return str(parsed.with_user(None).with_password(None).with_query(None).with_fragment(None))


# Headers that carry credentials: never kept, whatever their value.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)


def shown_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as a log may keep them: a credential's value replaced by REDACTED (the other
    values are redacted with the rest of a record, against every configured secret)."""
    return {  # str(): aiohttp's names are istr, which a JSON encoder may refuse as keys
        str(name): REDACTED if name.lower() in CREDENTIAL_HEADERS else value
        for name, value in headers.items()
    }
