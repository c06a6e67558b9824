"""Which session a request belongs to, from what each client sends: an explicit
`x-localrouter-session` header, Claude Code's `x-claude-code-session-id`, an OpenAI
`prompt_cache_key` or `session_id`, a Responses chain (`previous_response_id`), or the OpenAI
`user` field. The ledger records it; a key pool keeps a session on one key."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import istr

EXPLICIT = istr("x-localrouter-session")
CLAUDE_CODE = istr("x-claude-code-session-id")
MAX_SESSION_CHARS = 200


def header_session(request: web.Request) -> str | None:
    """The session a client names in a header (ours, or Claude Code's), capped in length."""
    headers = request.headers
    found = headers.get(EXPLICIT) or headers.get(CLAUDE_CODE)
    return found[:MAX_SESSION_CHARS] if found else None


def session_of(named: str | None, body: dict[str, Any]) -> str | None:
    """The request's session, or None: `named`, the one a header names (header_session),
    else its body's; capped in length (a client chooses it)."""
    if named is not None:
        return named
    for field in ("prompt_cache_key", "session_id", "previous_response_id", "user"):
        value = body.get(field)
        if value and isinstance(value, str):  # a failed isinstance() costs a microsecond
            return value[:MAX_SESSION_CHARS]
    return None
