"""Ollama's call endpoints for every chat-capable instance: `POST /api/chat` and
`/api/generate` translated to Chat Completions and back (ollama_to_chat.py,
chat_to_ollama.py), `/api/embed` and `/api/embeddings` to `/v1/embeddings`; an `ollama`
instance gets the request as it is. Errors in Ollama's shape (`{"error": "..."}`). Model
management (pull, push, create, copy, delete) is refused with a clear answer: models come from
the configured providers. Calls go through attempts.py: aliases, allowlists, fallbacks and
key pools hold here as everywhere."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from localrouter.base.errors import OLLAMA, BadRequest, NotServedHere
from localrouter.base.jsonload import Json
from localrouter.base.secrets import redact_bytes
from localrouter.http.bodies import JSON, request_json
from localrouter.lists.instance import Instance, Route
from localrouter.lists.resolve import Resolver, ollama_name
from localrouter.protocols import attempts
from localrouter.protocols.bridge import an_object, translate_stream, whole_answer
from localrouter.protocols.forward import (
    Call,
    Exchange,
    Forwarded,
    RequestBody,
    TranslatedReply,
    chat_route,
    rewritten,
    translated_for,
)
from localrouter.protocols.ollama.from_chat import OllamaAnswer, OllamaStream, ndjson
from localrouter.protocols.ollama.to_chat import chat_request, generate_request, streams
from localrouter.protocols.session import header_session
from localrouter.providers.base import Wire
from localrouter.usage.scan import OLLAMA as OLLAMA_USAGE

NDJSON = "application/x-ndjson"


def routes(upstreams: attempts.Upstreams) -> dict[str, Handler]:
    """Ollama's model calls by path, bound to `upstreams`."""
    return {
        f"/{path}": OllamaCall(upstreams, path)
        for path in ("api/chat", "api/generate", "api/embed", "api/embeddings")
    }


async def manage(request: web.Request) -> web.Response:
    """Pull, push, create, copy, delete, blobs: not what a gateway does."""
    raise NotServedHere(
        f"localrouter cannot {request.path.removeprefix('/api/')} models: it serves the models "
        "of the providers in its config. Pull or create the model on the Ollama server (or "
        "other provider) localrouter forwards to, and it is listed here."
    )


class OllamaCall:
    """POST /api/{chat,generate,embed,embeddings} for the app's upstreams."""

    __slots__ = ("_path", "_upstreams")

    def __init__(self, upstreams: attempts.Upstreams, path: str) -> None:
        self._upstreams, self._path = upstreams, path

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        body = await request_json(request)
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("'model' is required: a name from GET /api/tags.", param="model")
        resolver = self._upstreams.resolver
        model = await resolver.our_id(name)
        plan = OllamaPlan(
            RequestBody(body, await request.read()), name, model, self._path, resolver
        )
        stream = streams(body) and self._path in ("api/chat", "api/generate")
        asked = self._upstreams.asked(request, body, header_session(request))
        del body  # see RequestBody
        return await attempts.answer(
            request,
            model,
            plan,
            self._upstreams,
            asked,
            stream=stream,
        )


class OllamaPlan:
    """An Ollama request as it is for an `ollama` instance, else translated."""

    __slots__ = ("asked", "body", "name", "path", "resolver")

    def __init__(
        self, body: RequestBody, name: str, asked: str, path: str, resolver: Resolver
    ) -> None:
        self.body, self.name, self.path, self.resolver = body, name, path, resolver
        self.asked = asked  # the id (or alias) `name` stands for

    async def __call__(self, instance: Instance, upstream_id: str, name: str) -> Call:
        if (native := instance.route(Wire.OLLAMA)) is not None:
            body = self.body.take()
            streamed = streams(body) and self.path in ("api/chat", "api/generate")
            data, _ = rewritten(body, upstream_id)
            return Call(native, self.path, data, streamed, NATIVE)
        route = chat_route(instance, self.name)
        if self.path in ("api/embed", "api/embeddings"):
            return self._embedding(route, upstream_id, name)
        listed = await self.resolver.listing(instance, upstream_id)
        reasoning = listed is not None and listed.takes_reasoning_effort
        body = self.body.take()
        generating = self.path == "api/generate"
        translate = generate_request if generating else chat_request
        data = translated_for(instance, translate(body, upstream_id, reasoning=reasoning))
        answer = OllamaAnswer(self._shown(name), generate=generating)
        streamed = streams(body)
        return Call(route, "chat/completions", data, streamed, OllamaReply(answer, streamed))

    def _shown(self, name: str) -> str:
        """The name an answer gives: the one asked for, or a fallback's in Ollama's form."""
        return self.name if name == self.asked else ollama_name(name)

    def _embedding(self, route: Route, upstream_id: str, name: str) -> Call:
        body = self.body.take()
        given = body.get("input") if self.path == "api/embed" else body.get("prompt")
        if not isinstance(given, (str, list)) or not given:
            field = "input" if self.path == "api/embed" else "prompt"
            raise BadRequest(f"'{field}' is required: the text to embed.", param=field)
        wanted: dict[str, Any] = {"model": upstream_id, "input": given}
        if isinstance(body.get("dimensions"), int):
            wanted["dimensions"] = body["dimensions"]
        reply = Embedded(self._shown(name), legacy=self.path == "api/embeddings")
        return Call(route, "embeddings", orjson.dumps(wanted), False, reply)


def _error_line(body: Json) -> bytes:
    return orjson.dumps(body) + b"\n"


# An `ollama` instance's answer, as it is; errors in Ollama's shape.
NATIVE = Forwarded(OLLAMA, _error_line, OLLAMA_USAGE)


class OllamaErrors(TranslatedReply):
    """Upstream refusals in Ollama's shape."""

    __slots__ = ()
    shape = OLLAMA


class OllamaReply(OllamaErrors):
    """A Chat Completions answer, whole or streamed, as Ollama's."""

    __slots__ = ("form", "streamed")

    def __init__(self, form: OllamaAnswer, streamed: bool) -> None:
        self.form, self.streamed = form, streamed

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        request, upstream, http, where, shown, recorded = exchange
        if self.streamed:
            stream = OllamaStream(self.form)
            return await translate_stream(
                request,
                upstream,
                http,
                stream,
                where,
                shown,
                recorded,
                encode=ndjson,
                content_type=NDJSON,
            )
        answer = whole_answer(recorded, await http.read_body(upstream, where), where)
        whole = orjson.dumps(self.form.whole(answer))
        return web.Response(
            body=redact_bytes(whole, http.secrets), content_type=JSON, headers=shown
        )


class Embedded(OllamaErrors):
    """An embeddings answer as `/api/embed` (`embeddings`) or `/api/embeddings` (`embedding`)."""

    __slots__ = ("legacy", "name")

    def __init__(self, name: str, *, legacy: bool) -> None:
        self.name, self.legacy = name, legacy

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        _request, upstream, http, where, shown, recorded = exchange
        answer = whole_answer(recorded, await http.read_body(upstream, where), where)
        data = answer.get("data")
        rows = sorted(
            (row for row in data if isinstance(row, dict)) if isinstance(data, list) else (),
            key=lambda row: row.get("index", 0) if isinstance(row.get("index"), int) else 0,
        )
        vectors = [row.get("embedding") for row in rows]
        if self.legacy:
            made: dict[str, Any] = {"embedding": vectors[0] if vectors else []}
        else:
            usage = an_object(answer.get("usage"))
            made = {
                "model": self.name,
                "embeddings": vectors,
                "total_duration": 0,
                "load_duration": 0,
                "prompt_eval_count": usage.get("prompt_tokens", 0),
            }
        return web.Response(body=orjson.dumps(made), content_type=JSON, headers=shown)
