"""Issue 37's tracing over real sockets: a loopback OTLP/HTTP receiver decodes what the daemon
exports (protobuf, with opentelemetry-proto); loopback upstreams speak each wire format with
usage (tests/usage_wires.py); the official OpenAI and Anthropic clients call the daemon.

One span per client request (SERVER, `{operation} {model}`) continuing the client's
`traceparent`, a child per upstream attempt (CLIENT) whose context goes upstream, GenAI
attributes, tokens and cost; a collector that is down or slow changes no answer, its failures
are counted and said at most once a minute, never with the headers' secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from localrouter.app import COMPONENTS
from localrouter.base.errors import ConfigError
from localrouter.telemetry.genai import operation_of, provider_name
from localrouter.telemetry.otel import QUEUE_LOGGER, traces_url
from localrouter.telemetry.tracing import Tracing
from tests.conftest import DaemonFactory, eventually, settings_from
from tests.usage_wires import (
    ANTHROPIC,
    CHAT,
    COMPLETION,
    EMBEDDING,
    HELLO,
    TEXT,
    UPSTREAM_KEY,
    AnthropicWire,
    OllamaWire,
    OpenAIWire,
    Wires,
    anthropic_sdk,
    ledger_config,
    openai_sdk,
)

COLLECTOR_TOKEN = "otlp-collector-secret-7f3a91"  # telemetry.headers: never in a log
ALICE = "alice-telemetry-token-4d2c"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = ProtoSpan.SPAN_KIND_SERVER, ProtoSpan.SPAN_KIND_CLIENT

Client = TestClient[web.Request, web.Application]


@dataclass
class Received:
    """A span as the collector decoded it, its ids in hex."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    error: bool
    start_ns: int
    end_ns: int


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class Collector:
    """An OTLP/HTTP receiver on loopback: POST /v1/traces, protobuf. With `delay`, each export
    is answered only after it (or once `release` is set, at the test's end)."""

    delay: float = 0.0
    spans: list[Received] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def export(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        body = await request.read()
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Received(
                            span.name,
                            span.kind,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in span.attributes},
                            resource,
                            span.status.code == ProtoStatus.STATUS_CODE_ERROR,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                        )
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def requests(self) -> list[Received]:
        return [span for span in self.spans if span.kind == SERVER]

    def children(self, parent: Received) -> list[Received]:
        return sorted(
            (s for s in self.spans if s.kind == CLIENT and s.parent_id == parent.span_id),
            key=lambda s: s.start_ns,
        )

    def request(self, request_id: str) -> Received:
        (found,) = (
            s for s in self.requests() if s.attributes["localrouter.request_id"] == request_id
        )
        return found


ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def collector(aiohttp_server: ServerFactory) -> AsyncIterator[Collector]:
    receiver = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url("")).rstrip("/")
    yield receiver
    receiver.release.set()


@pytest.fixture
async def slow_collector(aiohttp_server: ServerFactory) -> AsyncIterator[Collector]:
    """Answers each export after 2 s, past the daemon's export timeout (0.5 s) in its test."""
    receiver = Collector(delay=2.0)
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url("")).rstrip("/")
    yield receiver
    receiver.release.set()


@dataclass
class HeardWire(OpenAIWire):
    """OpenAI's API as usage_wires plays it, keeping each call's headers (its traceparent)."""

    heard: list[dict[str, str]] = field(default_factory=list)

    async def _take(self, request: web.Request) -> dict[str, Any]:
        self.heard.append(dict(request.headers))
        return await super()._take(request)


@pytest.fixture
async def wires(aiohttp_server: ServerFactory) -> Wires:
    fakes = HeardWire(), AnthropicWire(), OllamaWire()
    servers = [await aiohttp_server(fake.app()) for fake in fakes]
    urls = [str(server.make_url("")).rstrip("/") for server in servers]
    return Wires(*fakes, f"{urls[0]}/v1", f"{urls[1]}/v1", urls[2])


def heard(wires: Wires) -> list[dict[str, str]]:
    assert isinstance(wires.openai, HeardWire)
    return wires.openai.heard


def traced(endpoint: str, **telemetry: Any) -> dict[str, Any]:
    return {
        "otlp_endpoint": endpoint,
        "headers": {"Authorization": f"Bearer {COLLECTOR_TOKEN}"},
        **telemetry,
    }


def tracing_of(client: Client) -> Tracing:
    """The daemon's tracer: the recorder's observer that ends the spans."""
    for observer in client.app[COMPONENTS].recorder.observers:
        owner = getattr(observer, "__self__", None)
        if isinstance(owner, Tracing):
            return owner
    raise AssertionError("tracing is not on")


async def exported(client: Client, collector: Collector, requests: int) -> list[Received]:
    """The request spans, once `requests` of them reached the collector (a stream's record is
    finished just after its last byte left, so this settles and flushes until they are)."""
    tracing = tracing_of(client)
    recorder = client.app[COMPONENTS].recorder

    async def arrived() -> list[Received] | None:
        await recorder.settle()
        await tracing.flush()
        found = collector.requests()
        return found if len(found) >= requests else None

    return await eventually(arrived, f"{requests} request spans")


def tokens(span: Received) -> dict[str, Any]:
    names = (
        "input_tokens",
        "output_tokens",
        "cache_read.input_tokens",
        "cache_creation.input_tokens",
    )
    return {name: span.attributes.get(f"gen_ai.usage.{name}") for name in names}


def counted(expected: Any) -> dict[str, Any]:
    return {
        "input_tokens": expected.input,
        "output_tokens": expected.output,
        "cache_read.input_tokens": expected.cache_read or None,
        "cache_creation.input_tokens": expected.cache_write or None,
    }


async def test_spans_of_each_call_route_continue_the_clients_trace(
    wires: Wires, collector: Collector, daemon: DaemonFactory
) -> None:
    """Tracing on, the usage ledger off: a chat that sent a traceparent (and a tracestate),
    a stream, a completion, an embedding and a Messages call each make a request span with
    one attempt child, named and attributed per the GenAI conventions, with the upstream's
    counts, the cost at the config's prices, the client and the request id. The upstream got
    the attempt's own context in the client's trace."""
    config = {
        "providers": wires.instances(),
        "clients": [{"name": "alice", "token": ALICE}],
        "telemetry": traced(collector.url),
    }
    client = await daemon(config)
    parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    async with openai_sdk(client, ALICE) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/gpt-4o-mini",
            messages=HELLO,
            extra_headers={"traceparent": parent, "tracestate": "vendor=opaque"},
        )
        assert raw.parse().choices[0].message.content == TEXT
        chat_id = raw.headers["x-localrouter-request-id"]
        stream = await api.chat.completions.create(
            model="oa/gpt-4o-mini", messages=HELLO, stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
            TEXT
        )
        completion = await api.completions.create(model="oa/gpt-4o-mini", prompt="Say hello.")
        assert completion.choices[0].text == TEXT
        embedding = await api.embeddings.create(model="oa/text-embedding-3-small", input="hi")
        assert embedding.data[0].embedding == [0.0023, -0.0093, 0.0156]
    async with anthropic_sdk(client, ALICE) as claude:
        message = await claude.messages.create(
            model="claude/claude-sonnet-4-5", max_tokens=100, messages=HELLO
        )
        assert message.content[0].text == TEXT

    requests = await exported(client, collector, 5)
    assert len(requests) == 5
    by_name = {span.name: span for span in requests if span.trace_id != CLIENT_TRACE}
    assert sorted(by_name) == [
        "chat claude/claude-sonnet-4-5",
        "chat oa/gpt-4o-mini",
        "embeddings oa/text-embedding-3-small",
        "text_completion oa/gpt-4o-mini",
    ]

    chat = collector.request(chat_id)
    assert (chat.name, chat.trace_id, chat.parent_id) == (
        "chat oa/gpt-4o-mini",
        CLIENT_TRACE,
        CLIENT_SPAN,
    )
    assert chat.resource["service.name"] == "localrouter"
    wanted = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "oa/gpt-4o-mini",
        "gen_ai.response.model": "oa/gpt-4o-mini",
        "localrouter.client": "alice",
        "localrouter.attempts": 1,
        "localrouter.instance": "oa",
        "localrouter.stream": False,
        "http.response.status_code": 200,
    }
    assert {key: chat.attributes.get(key) for key in wanted} == wanted
    assert tokens(chat) == counted(CHAT)
    assert chat.attributes["localrouter.cost_usd"] == pytest.approx(CHAT.cost)
    assert "error.type" not in chat.attributes
    assert "gen_ai.input.messages" not in chat.attributes  # capture_content is off
    assert not chat.error
    assert chat.start_ns < chat.end_ns

    (attempt,) = collector.children(chat)
    assert (attempt.name, attempt.trace_id) == ("chat gpt-4o-mini", CLIENT_TRACE)
    upstream_port = int(wires.openai_url.rsplit(":", 1)[1].split("/")[0])
    wanted = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": upstream_port,
        "http.response.status_code": 200,
    }
    assert {key: attempt.attributes.get(key) for key in wanted} == wanted
    assert chat.start_ns <= attempt.start_ns <= attempt.end_ns <= chat.end_ns
    # The upstream got the attempt's context, in the client's trace, with its tracestate.
    sent = heard(wires)[0]
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"
    assert sent["tracestate"] == "vendor=opaque"

    streamed = by_name["chat oa/gpt-4o-mini"]  # its own trace: no traceparent sent
    assert streamed.parent_id == ""
    assert streamed.attributes["localrouter.stream"] is True
    assert tokens(streamed) == counted(CHAT)  # asked for usage: the ledger is off, spans read it
    (streamed_attempt,) = collector.children(streamed)
    version, trace_id, span_id, flags = heard(wires)[1]["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", streamed.trace_id, streamed_attempt.span_id)
    assert int(flags, 16) & 1  # sampled (a new trace's id is random too: 03)

    text = by_name["text_completion oa/gpt-4o-mini"]
    assert tokens(text) == counted(COMPLETION)
    assert text.attributes["localrouter.cost_usd"] == pytest.approx(COMPLETION.cost)
    assert [s.name for s in collector.children(text)] == ["text_completion gpt-4o-mini"]

    embedded = by_name["embeddings oa/text-embedding-3-small"]
    assert tokens(embedded) == counted(EMBEDDING)
    assert [s.name for s in collector.children(embedded)] == ["embeddings text-embedding-3-small"]

    messages = by_name["chat claude/claude-sonnet-4-5"]
    assert messages.attributes["gen_ai.provider.name"] == "anthropic"
    assert tokens(messages) == counted(ANTHROPIC)  # cache reads and writes apart
    assert messages.attributes["localrouter.cost_usd"] == pytest.approx(ANTHROPIC.cost)
    (claude_attempt,) = collector.children(messages)
    assert claude_attempt.name == "chat claude-sonnet-4-5"
    assert claude_attempt.attributes["gen_ai.provider.name"] == "anthropic"

    # The collector got the configured header; every export went through.
    assert {h.get("Authorization") for h in collector.headers} == {f"Bearer {COLLECTOR_TOKEN}"}
    assert tracing_of(client).failures == 0
    assert tracing_of(client).exported == len(collector.spans) == 10


async def test_a_fallback_makes_an_attempt_span_per_upstream_call(
    wires: Wires, collector: Collector, daemon: DaemonFactory, tmp_path: Any
) -> None:
    """`lab/overloaded` answers 503, its fallback `oa/gpt-4o-mini` answers: the request span
    counts 2 attempts and has two children, the first failed (error.type 503, an error
    status), the second answered. A model that does not exist: a request span with its
    error.type and no attempt."""
    config = ledger_config(
        tmp_path,
        wires.instances(),
        models={"fallbacks": {"lab/overloaded": ["oa/gpt-4o-mini"]}},
        telemetry=traced(f"{collector.url}/v1/traces"),  # the full URL works too
    )
    client = await daemon(config)
    async with openai_sdk(client) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="lab/overloaded", messages=HELLO
        )
        assert raw.parse().choices[0].message.content == TEXT
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(model="nowhere/none", messages=HELLO)
    await exported(client, collector, 2)
    request = collector.request(raw.headers["x-localrouter-request-id"])
    assert request.name == "chat lab/overloaded"
    assert request.attributes["localrouter.attempts"] == 2
    assert request.attributes["gen_ai.response.model"] == "oa/gpt-4o-mini"
    assert request.attributes["gen_ai.provider.name"] == "openai"
    assert tokens(request) == counted(CHAT)
    assert request.attributes["localrouter.cost_usd"] == pytest.approx(CHAT.cost)
    failed, answered = collector.children(request)
    assert failed.name == "chat overloaded"
    assert failed.attributes["error.type"] == "503"
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["localrouter.instance"] == "lab"
    assert failed.error
    assert "gen_ai.response.model" not in failed.attributes
    assert answered.name == "chat gpt-4o-mini"
    assert "error.type" not in answered.attributes
    assert not answered.error
    assert failed.end_ns <= answered.start_ns
    # Each call upstream carried its own attempt's context.
    assert [h["traceparent"].split("-")[2] for h in heard(wires)] == [
        failed.span_id,
        answered.span_id,
    ]

    (missing,) = (s for s in collector.requests() if s.name == "chat nowhere/none")
    assert missing.attributes["error.type"] == "model_not_found"
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.attributes["localrouter.attempts"] == 0
    assert collector.children(missing) == []


async def test_captured_content_is_redacted_and_only_when_asked(
    wires: Wires, collector: Collector, daemon: DaemonFactory, tmp_path: Any
) -> None:
    """telemetry.capture_content with the request log keeping bodies: the prompt and the
    answer go on the request span, a configured secret in the prompt redacted. The daemon's
    stop exports the spans left."""
    config = ledger_config(
        tmp_path,
        wires.instances(),
        request_log={"bodies": "all"},
        telemetry=traced(collector.url, capture_content=True),
    )
    client = await daemon(config)
    prompt = [{"role": "user", "content": f"Is {UPSTREAM_KEY} a key?"}]
    async with openai_sdk(client) as api:
        answer = await api.chat.completions.create(model="oa/gpt-4o-mini", messages=prompt)
    assert answer.choices[0].message.content == TEXT
    await client.close()  # the daemon stops: what is left is settled and exported
    (span,) = collector.requests()
    sent = span.attributes["gen_ai.input.messages"]
    assert "Is *** a key?" in sent
    assert UPSTREAM_KEY not in sent
    assert TEXT in span.attributes["gen_ai.output.messages"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_collector_that_is_down_changes_no_answer_and_is_said_once(
    wires: Wires,
    daemon: DaemonFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Spans to a closed port: every answer is as without tracing, the daemon still answers;
    the failed exports are counted and said in one warning (a minute apart at most), which
    names the endpoint and never the header's secret."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    config = {
        "providers": wires.instances(),
        "telemetry": traced(endpoint, timeout_seconds=0.5),
    }
    client = await daemon(config)
    tracing = tracing_of(client)
    recorder = client.app[COMPONENTS].recorder
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            async with openai_sdk(client) as api:
                answer = await api.chat.completions.create(model="oa/gpt-4o-mini", messages=HELLO)
            assert answer.choices[0].message.content == TEXT
            await recorder.settle()
            assert await tracing.flush()
    assert tracing.failures >= 2
    assert tracing.exported == 0
    warnings = [entry for entry in logs if entry["event"] == "telemetry.export_failed"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["endpoint"] == f"{endpoint}/v1/traces"
    assert warnings[0]["reason"].startswith("ConnectionError")  # requests' own, the cause
    response = await client.get("/health")
    assert response.status == 200
    said = repr(logs) + caplog.text + "".join(capsys.readouterr())
    assert COLLECTOR_TOKEN not in said
    # A full queue's warning, one per dropped span on the event loop, is never made.
    queue = logging.getLogger(QUEUE_LOGGER)
    assert not queue.isEnabledFor(logging.WARNING)
    assert queue.isEnabledFor(logging.ERROR)


async def test_a_slow_collector_changes_no_answer(
    wires: Wires, slow_collector: Collector, daemon: DaemonFactory
) -> None:
    """A collector that answers after the export timeout: the calls are answered as ever, each
    export that timed out is counted, and the daemon answers the next call too."""
    config = {
        "providers": wires.instances(),
        "telemetry": traced(slow_collector.url, timeout_seconds=0.5),
    }
    client = await daemon(config)
    tracing = tracing_of(client)
    recorder = client.app[COMPONENTS].recorder
    async with openai_sdk(client) as api:
        stream = await api.chat.completions.create(
            model="oa/gpt-4o-mini", messages=HELLO, stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
            TEXT
        )
        await recorder.settle()
        await tracing.flush()
        assert tracing.failures >= 1
        answer = await api.chat.completions.create(model="oa/gpt-4o-mini", messages=HELLO)
        assert answer.choices[0].message.content == TEXT
    assert slow_collector.headers  # the exports did reach it


def test_the_endpoint_takes_the_traces_path_once() -> None:
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://collector/v1/traces") == "http://collector/v1/traces"
    assert traces_url("http://collector/v1/traces/") == "http://collector/v1/traces"
    assert (
        traces_url("https://cloud.langfuse.com/api/public/otel")
        == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    )


def test_operations_and_providers_by_the_conventions_names() -> None:
    chats = ("/v1/chat/completions", "/api/v1/chat/completions", "/v1/messages", "/v1/responses")
    assert {operation_of(path) for path in (*chats, "/api/chat")} == {"chat"}
    assert {operation_of(p) for p in ("/v1/completions", "/api/generate")} == {"text_completion"}
    embeds = ("/v1/embeddings", "/api/embed", "/api/embeddings")
    assert {operation_of(path) for path in embeds} == {"embeddings"}
    assert [provider_name(t) for t in ("openai", "gemini", "mistral", "xai", "ollama")] == [
        "openai",
        "gcp.gemini",
        "mistral_ai",
        "x_ai",
        "ollama",
    ]


def test_an_endpoint_without_the_sdk_fails_the_config_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if the extra were not installed: the check says which extra to install."""
    for module in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(
        sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", raising=False
    )
    with pytest.raises(ConfigError, match=r"pip install 'localrouter\[otel\]'") as raised:
        settings_from({"telemetry": {"otlp_endpoint": "http://127.0.0.1:4318"}})
    assert "telemetry.otlp_endpoint" in str(raised.value)
    assert not settings_from({"telemetry": {"capture_content": True}}).telemetry.enabled
