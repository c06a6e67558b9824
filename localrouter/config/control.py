"""What `models:` and `clients:` make of the merged list, compiled once per config: aliases
(followed to their final target), hidden ids, fallbacks, and each client's allowlist.

Globs are fnmatch patterns, case-sensitive, where `*` also crosses `/` (`groq/*` is every
groq model, `*/whisper-*` every instance's whisper models)."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from localrouter.config.settings import Settings

Entry = dict[str, Any]  # one model as a view lists it, by its "id"


class Globs:
    """Patterns as one compiled regular expression; no patterns match nothing."""

    __slots__ = ("_match", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        joined = "|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns)
        self._match = re.compile(joined).match if patterns else None

    def __call__(self, model_id: str) -> bool:
        return self._match is not None and self._match(model_id) is not None


@dataclass(frozen=True, eq=False)  # compared (and hashed) by identity: one per config
class Client:
    """A tool with its own token; `allow` None admits everything."""

    name: str
    allow: Globs | None
    # Each name's verdict, remembered: a client calls the same few models again and again.
    _verdicts: dict[str, bool] = field(default_factory=dict, repr=False)

    def allows(self, *ids: str) -> bool:
        """Whether any of the names a model goes by (alias, id) is admitted."""
        allow = self.allow
        if allow is None:
            return True
        verdicts = self._verdicts
        for model_id in ids:
            verdict = verdicts.get(model_id)
            if verdict is None:
                verdict = allow(model_id)
                if len(verdicts) < 4096:  # bounded: callers choose the names
                    verdicts[model_id] = verdict
            if verdict:
                return True
        return False


@dataclass(frozen=True, eq=False)
class ModelRules:
    aliases: dict[str, str]  # alias -> the id it finally names (a chain followed to its end)
    hidden: Globs
    fallbacks: dict[str, tuple[str, ...]]
    clients: dict[bytes, Client]  # by the SHA-256 of their token: no token is kept in clear

    @classmethod
    def of(cls, settings: Settings) -> ModelRules:
        configured = settings.models
        aliases = {alias: _final(alias, configured.aliases) for alias in configured.aliases}
        clients = {
            token_digest(client.token.get_secret_value()): Client(
                client.name, Globs(client.allow) if client.allow is not None else None
            )
            for client in settings.clients
        }
        fallbacks = {model: tuple(choices) for model, choices in configured.fallbacks.items()}
        return cls(aliases, Globs(configured.hide), fallbacks, clients)

    @functools.cached_property  # read on every cached view's request
    def shapes_lists(self) -> bool:
        """Whether the lists differ from the merged one for a caller who sees everything."""
        return bool(self.aliases or self.hidden.patterns)

    def target(self, model: str) -> str:
        return self.aliases.get(model, model)

    def admits(self, client: Client | None, model_id: str, *also: str) -> bool:
        """Whether `model_id` is listed for `client` (None: one who sees everything)."""
        return not self.hidden(model_id) and (client is None or client.allows(model_id, *also))

    def shaped(
        self,
        entries: Mapping[str, Entry],
        client: Client | None,
        full_id: Callable[[str], str | None],
    ) -> list[Entry]:
        """A view's entries (by id, sorted) as `client` sees them: hidden ids and those
        outside its allowlist left out, aliases added as copies of their target's entry with
        `alias_of`. `full_id` names the listed id a bare alias target resolves to."""
        kept = {
            model_id: entry for model_id, entry in entries.items() if self.admits(client, model_id)
        }
        aliased = False
        for alias, target in self.aliases.items():
            listed = target if target in entries else full_id(target)
            entry = entries.get(listed) if listed is not None else None
            if entry is None or alias in kept or not self.admits(client, alias, entry["id"]):
                continue
            kept[alias] = {**entry, "id": alias, "alias_of": entry["id"]}
            aliased = True
        return [kept[model_id] for model_id in sorted(kept)] if aliased else [*kept.values()]


def _final(alias: str, aliases: dict[str, str]) -> str:
    target = aliases[alias]
    while target in aliases:  # config.py refuses loops and long chains
        target = aliases[target]
    return target


def token_digest(token: str) -> bytes:
    """How a presented token is looked up: by its digest, so the lookup takes the same time
    whatever its first characters are, and the table holds no token."""
    return hashlib.sha256(token.strip().encode()).digest()


# What a shaped list is cached by: the rules of one config, and the client asking (None: one
# who sees everything).
ShapeKey = tuple[ModelRules, Client | None]


def shape_key(rules: ModelRules, client: Client | None) -> ShapeKey | None:
    """How `client` sees the lists under `rules`; None when as merged (no rules, no client)."""
    return (rules, client) if client is not None or rules.shapes_lists else None


def may_call(client: Client, asked: str, resolved: str | None) -> bool:
    """The allowlist rule for calls and single-model lookups: a client may use a model by the
    name it asked for (an alias, a bare id) or by the `instance/model` id that name resolved
    to (None: it resolves to nothing, and then only the name itself counts)."""
    return client.allows(asked) if resolved is None else client.allows(asked, resolved)
