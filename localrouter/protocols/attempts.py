"""Which upstream calls a request gets: its model's, with another key of the instance's pool
when one is rate limited or refused, then each of the model's fallbacks (models.fallbacks) in
turn, until one answers or none is left.

A call is tried again elsewhere only when it failed before any byte reached the client: the
upstream could not be reached or timed out, or answered 401, 403, 404, 408, 429 or 5xx. A
caller's mistake (400, 413, 422, ...) is answered as it is. A fallback is skipped when nothing
serves it now, when the caller's allowlist does not admit it, or when it cannot take the
request (an image model for a chat). A key that turned a request away (429, 401, 403) is not
tried again for it, so a request makes at most one such call per key. The client sees the last
failure, and every answer says which id answered or was tried last (`x-localrouter-model`) after
how many upstream calls (`x-localrouter-attempts`; 0 when a pool with no key free answered)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from multidict import istr

from localrouter.base.errors import (
    ApiError,
    BudgetExceeded,
    GatewayError,
    ModelNotFound,
    NoKeyFree,
    RateLimited,
    UnpricedRefused,
)
from localrouter.base.jsonload import Json
from localrouter.base.secrets import shown_headers
from localrouter.config.control import Client
from localrouter.config.live import LiveSettings
from localrouter.http.guard import CLIENT
from localrouter.http.metrics import Metrics
from localrouter.limits.estimate import output_cap
from localrouter.limits.gate import Limits, Ticket
from localrouter.limits.rules import CallerLimits
from localrouter.lists.instance import Instance
from localrouter.lists.resolve import Resolver
from localrouter.protocols.forward import Call, send
from localrouter.protocols.session import session_of
from localrouter.telemetry.tracing import Tracing
from localrouter.upstream.key_pool import RATE_LIMITED, REFUSED, KeyPool
from localrouter.usage.recording import REQUEST_ID_HEADER, Recorder, error_text
from localrouter.usage.recording import Call as RecordedCall

log = structlog.get_logger(__name__)

# istr: a plain str header name costs an istr made each time the response's headers are written
MODEL_HEADER: str = istr("x-localrouter-model")
ATTEMPTS_HEADER: str = istr("x-localrouter-attempts")
TRIED_ELSEWHERE = frozenset({401, 403, 404, 408, 429})  # and every 5xx

# What a route makes of a request for one instance and upstream id, answering as `name` (the
# model asked for, or the fallback tried: what a translated answer names); raises ApiError
# when that instance cannot take it.
Plan = Callable[[Instance, str, str], Awaitable[Call]]


# What a request asks, as its route read it (Upstreams.asked): its client (None: the admin,
# or anyone when no token is set), the limits the client is held to (None: none), its session,
# and its output cap (read only when there are limits). A plain tuple: one is made per call.
Asked = tuple[Client | None, CallerLimits | None, str | None, int | None]


@dataclass(frozen=True, slots=True)
class Upstreams:
    """What the routes that call models need, handed to their handlers when app.py builds
    them: the live settings, the metrics, the resolver (with the registry it reads), the
    recorder that keeps each request's usage and the limits that may refuse it."""

    live: LiveSettings
    metrics: Metrics
    resolver: Resolver
    recorder: Recorder
    limits: Limits
    tracing: Tracing | None = None  # telemetry.otlp_endpoint set

    def asked(self, request: web.Request, body: Json, named: str | None) -> Asked:
        """What the call path needs of a parsed request before its route lets it go: its
        client and the limits the client is held to, its session (a key pool keeps it on one
        key, the ledger records it; `named`: the one a header names, header_session), and the
        most output tokens it asks for when there are limits to reserve them against."""
        client = request[CLIENT]
        caller = self.limits.of(client)
        cap = output_cap(body) if caller is not None else None
        return client, caller, session_of(named, body), cap

    def records(self, caller: CallerLimits | None) -> bool:
        """Whether a call is recorded: for the ledger, the spans, or its caller's limits
        (`caller`). Otherwise nothing would read its record, and only its id is made; nor its
        usage (a stream is asked for it only when recorded, and a recorded call takes out
        again the usage its client did not ask for)."""
        return self.recorder.enabled or self.tracing is not None or caller is not None


# A limit refusing a model: its fallbacks are tried, as for a model the allowlist refuses.
LIMIT_REFUSALS = (RateLimited, BudgetExceeded, UnpricedRefused)


async def answer(
    request: web.Request,
    model: str,
    plan: Plan,
    upstreams: Upstreams,
    asked: Asked,
    *,
    stream: bool = False,
) -> web.StreamResponse:
    """The client's answer for `model` (an id or an alias): one call in the common case,
    more with a key pool or fallbacks; admitted by the client's limits (`asked`), and
    recorded however it ends (usage/recording.py) when anything reads its record: the
    ledger, the client's limits or the tracer. Every answer and refusal from here on carries
    its request id."""
    client, caller, session, asked_output = asked
    recorder = upstreams.recorder
    request_id = recorder.new_id()
    call, admit = None, None
    if upstreams.records(caller):
        # The body as the route read it (no I/O): its size whether it came with a
        # Content-Length, in chunks or compressed.
        body = await request.read()
        name = client.name if client else None
        call = recorder.start(request_id, request.path, model, name, len(body))
        call.record.stream, call.record.session = stream, session
        if upstreams.tracing is not None:
            call.trace = upstreams.tracing.start(request, call)
        if call.keep:
            call.request_body = body
            call.request_headers = shown_headers(request.headers)
        if caller is not None:
            admit = Admission(upstreams, caller, call, asked_output)
    status, error_type, cancelled = 0, None, False
    try:
        response = await _answer(
            request, model, plan, upstreams, request_id, client, session, call, admit
        )
        if call is not None:
            status = response.status
            if status >= 400 or call.keep:
                _answered(call, response)
        return response
    except ApiError as error:
        status, error_type = error.status, error.code
        error.headers[REQUEST_ID_HEADER] = request_id
        if call is not None:
            call.record.error = error.message
        raise
    except asyncio.CancelledError:
        cancelled = True  # the client left: the handler was cancelled
        raise
    except Exception:
        status, error_type = 500, "internal"
        raise
    finally:
        if call is not None:
            recorder.finish(call, status, error_type=error_type, cancelled=cancelled)


def _answered(call: RecordedCall, response: web.StreamResponse) -> None:
    """A whole answer's body for the request log, and an error's message for the record."""
    if not isinstance(response, web.Response):
        return  # a stream: its bytes were kept as they went by, when kept
    body = response.body
    if response.status >= 400:
        call.record.error = error_text(body)
    if call.keep and isinstance(body, (bytes, bytearray)):
        call.response_body = bytes(body)


class Admission:
    """A request's admission by its caller's limits, for each model it goes to in turn."""

    __slots__ = ("asked_output", "caller", "record", "ticket", "upstreams")

    def __init__(
        self,
        upstreams: Upstreams,
        caller: CallerLimits,
        record: RecordedCall,
        asked_output: int | None,
    ) -> None:
        self.upstreams, self.caller, self.record = upstreams, caller, record
        self.asked_output = asked_output
        self.ticket: Ticket | None = None

    async def __call__(self, name: str, instance: Instance, upstream_id: str) -> dict[str, str]:
        """Reserve the call to `instance`/`upstream_id` (asked for as `name`), giving back
        what a model tried before reserved; the headers the answer carries."""
        if self.ticket is not None:
            self.ticket.refund()
        upstreams, caller, record = self.upstreams, self.caller, self.record
        limits = upstreams.limits
        terms = limits.terms(caller, name, instance, upstream_id)
        if terms is None:
            listing = upstreams.resolver.listing(instance, upstream_id)
            terms = await limits.new_terms(caller, name, instance, upstream_id, listing)
        request_bytes, call_id = record.request_bytes, record.record.id
        if limits.shared is None:
            ticket = limits.admit(terms, request_bytes, self.asked_output, call_id)
        else:
            ticket = await limits.admit_in_fleet(terms, request_bytes, self.asked_output, call_id)
        self.ticket = ticket
        record.reserved(ticket)
        return ticket.headers


async def _answer(
    request: web.Request,
    model: str,
    plan: Plan,
    upstreams: Upstreams,
    request_id: str,
    client: Client | None,
    session: str | None,
    record: RecordedCall | None,
    admit: Admission | None,
) -> web.StreamResponse:
    rules = upstreams.live.rules
    resolver = upstreams.resolver
    fallbacks = rules.fallbacks
    chain, listed_as = (fallbacks.get(model), model) if fallbacks else (None, model)
    if chain is None:
        instance, upstream_id = await resolver.resolve(model, client)
        full_id = f"{instance.name}/{upstream_id}"
        if fallbacks:
            chain, listed_as = fallbacks.get(full_id), full_id
        if chain is None and instance.keys is None:
            call = await plan(instance, upstream_id, model)
            shown = {MODEL_HEADER: full_id, ATTEMPTS_HEADER: "1", REQUEST_ID_HEADER: request_id}
            if record is not None:
                record.answered_by(instance, upstream_id, None, 1)
            if admit is not None:
                shown.update(await admit(model, instance, upstream_id))
            return await send(request, instance, call, shown, 0, recorded=record)
    names = (model, *(chain or ()))
    return await _in_turn(
        request, names, plan, listed_as, upstreams, request_id, client, session, record, admit
    )


async def _in_turn(
    request: web.Request,
    names: tuple[str, ...],
    plan: Plan,
    listed_as: str,
    upstreams: Upstreams,
    request_id: str,
    client: Client | None,
    session: str | None,
    record: RecordedCall | None,
    admit: Admission | None,
) -> web.StreamResponse:
    """Each name in turn (the model, then its fallbacks) until a call answers. `listed_as`
    is the model's name in models.fallbacks (metrics count by config names only)."""
    resolver, metrics = upstreams.resolver, upstreams.metrics
    attempts = 0
    failure: web.StreamResponse | ApiError | None = None
    failed_name = listed_as
    spent: dict[KeyPool, set[int]] = {}  # the keys that turned this request away, per pool
    for position, name in enumerate(names):
        admitted: dict[str, str] = {}
        try:
            instance, upstream_id = await resolver.resolve(name, client)
            call = await plan(instance, upstream_id, name)
            if admit is not None:
                admitted = await admit(name, instance, upstream_id)
        except LIMIT_REFUSALS as refusal:
            if position == len(names) - 1:
                raise
            log.info("proxy.fallback_skipped", fallback=name, reason=refusal.message)
            failure = refusal
            continue
        except ModelNotFound as error:
            if position == 0 and len(names) > 1:  # gone: its fallbacks may serve
                failure = error
                continue
            if position == 0:
                raise
            log.warning("proxy.fallback_skipped", fallback=name, reason=error.message)
            continue
        except ApiError as error:
            if position == 0:
                raise  # the caller asked for it: not allowed, not a chat model, ...
            log.info("proxy.fallback_skipped", fallback=name, reason=error.message)
            continue
        if position > 0:
            metrics.count_fallback(failed_name, name)
            log.info("proxy.fallback", model=failed_name, fallback=name)
        full_id = f"{instance.name}/{upstream_id}"
        pool = instance.keys
        turned_away = spent.setdefault(pool, set()) if pool is not None else set()
        while True:
            key = 0
            if pool is not None:
                try:
                    key = pool.pick(turned_away, session)
                except NoKeyFree as none:
                    failure = _no_key(none, pool)
                    failure.headers.update({MODEL_HEADER: full_id, ATTEMPTS_HEADER: str(attempts)})
                    if record is not None:
                        record.answered_by(instance, upstream_id, None, attempts)
                    break
            attempts += 1
            if record is not None:
                record.answered_by(
                    instance, upstream_id, key if pool is not None else None, attempts
                )
            shown = {
                MODEL_HEADER: full_id,
                ATTEMPTS_HEADER: str(attempts),
                REQUEST_ID_HEADER: request_id,
                **admitted,
            }
            try:
                response = await send(request, instance, call, shown, key, recorded=record)
            except GatewayError as error:
                if not error.retryable:
                    raise
                error.headers.update(shown)
                failure = error
                break
            status = response.status
            if status < 400 or (status < 500 and status not in TRIED_ELSEWHERE):
                return response
            failure = response
            if pool is None or not _about_the_key(status):
                break
            turned_away.add(key)
        failed_name = name
    if isinstance(failure, ApiError):
        raise failure
    assert failure is not None  # the first name is always resolved or raised, then tried
    return failure


def _about_the_key(status: int) -> bool:
    return status == RATE_LIMITED or status in REFUSED


def _no_key(none: NoKeyFree, pool: KeyPool) -> GatewayError:
    """Every key rests (429, with the shortest wait) or was refused (502)."""
    if none.wait is None:
        return GatewayError(none.describe(pool.instance), status=502, code="upstream_keys_refused")
    error = GatewayError(none.describe(pool.instance), status=429, code="upstream_rate_limited")
    error.headers["Retry-After"] = str(max(1, round(none.wait)))
    return error
