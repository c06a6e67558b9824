"""Who may call: the Host check (DNS-rebinding protection), the tokens (the admin's and each
client's) and CORS. The route wrapper (endpoint.py) asks the guard before every handler."""

from __future__ import annotations

import enum
import hmac
import ipaddress
import socket
from collections.abc import Mapping, Sequence

from aiohttp import hdrs, web

from localrouter.base.errors import AdminOnly, MisdirectedRequest, TwoCredentials, Unauthorized
from localrouter.config.control import Client, token_digest
from localrouter.config.server import WILDCARD_HOSTS, ServerSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_HOST, _AUTHORIZATION = hdrs.HOST, hdrs.AUTHORIZATION

# The client a request came from (clients: in the config); None for one who sees everything.
# Set by the route wrapper before an awaited handler runs.
CLIENT: web.RequestKey[Client | None] = web.RequestKey("client")
# The app's guard, for what prepares a stream outside the route wrapper (add_cors).
GUARD: web.AppKey[Guard] = web.AppKey("guard")


class _Known(enum.Enum):
    NOT = "not"  # an Authorization value not (yet) known to carry a token


_UNKNOWN = _Known.NOT


class Guard:
    """Who may call: DNS-rebinding protection (the Host must name this machine's loopback or
    the configured host), the tokens (`server.auth_token`, the admin's, and each client's)
    and the CORS origins; a config reload replaces all but the first (see `use`)."""

    def __init__(
        self, server: ServerSettings, clients: Mapping[bytes, Client] | None = None
    ) -> None:
        self._bound_to = server.host  # the address bound at start; a reload cannot move it
        self._ollama_port = server.ollama_port  # bound at start too
        self._ollama_client: Client | None = None
        self._any_host = server.host in WILDCARD_HOSTS
        self._allowed: frozenset[str] = frozenset()
        self._hosts_ok: set[str] = set()  # raw Host values already found allowed
        self._token: bytes | None = None
        self._clients: Mapping[bytes, Client] = {}
        # Authorization values already found to be a client's token (or the admin's: None).
        self._known: dict[str, Client | None] = {}
        self.cors_origins: frozenset[str] = frozenset()
        self.use(server, clients or {})

    def use(self, server: ServerSettings, clients: Mapping[bytes, Client]) -> None:
        token = server.auth_token
        self._token = token.get_secret_value().encode() if token is not None else None
        self._clients = clients
        self._known = {}
        named = server.ollama_client
        self._ollama_client = next((c for c in clients.values() if c.name == named), None)
        self.cors_origins = frozenset(server.cors_origins)
        own = (socket.gethostname(),) if self._any_host else ()  # no DNS: the name only
        names = (*LOOPBACK_NAMES, self._bound_to, *own, *server.allowed_hosts)
        self._allowed = frozenset(name.strip("[]").lower() for name in names if name)
        self._hosts_ok = set()

    def allows_origin(self, origin: str) -> bool:
        return origin in self.cors_origins or "*" in self.cors_origins

    def check(
        self, request: web.Request, needs_token: bool, admin_only: bool = False
    ) -> Client | None:
        """Raise unless the request may go on; the client it comes from, or None for one who
        sees everything (the admin, or anyone when no token is set). The common case is two
        lookups."""
        headers = request.headers
        host = headers.get(_HOST)
        if host is not None and host not in self._hosts_ok:
            self._check_host(host, request)
        if not needs_token:
            return None
        if self._clients:
            sent = headers.getall(_AUTHORIZATION, ())
            if len(sent) == 1:
                client = self._known.get(sent[0], _UNKNOWN)
                if client is None or (client is not _UNKNOWN and not admin_only):
                    return client  # else the long way (to a refusal, for a client on admin_only)
            return self._client(request, sent, admin_only)
        if self._token is not None and not _is_token(_presented(request), self._token):
            if _is_preflight(request):
                return None  # browsers send no credentials on a preflight; no_route answers it
            raise Unauthorized(
                "Missing or wrong token: send 'Authorization: Bearer <server.auth_token>' "
                "(the OpenAI SDKs send their api_key that way)."
            )
        return None

    def _client(self, request: web.Request, sent: Sequence[str], admin_only: bool) -> Client | None:
        """The client of a request whose Authorization values (`sent`) are not known yet."""
        presented = _presented(request)
        if presented is not None and self._token is not None and _is_token(presented, self._token):
            self._remember(sent, None)
            return None
        client = self._clients.get(token_digest(presented)) if presented is not None else None
        if client is not None:
            self._remember(sent, client)
        elif not sent and presented is None and self._on_ollama_port(request):
            # Ollama clients send no credential at all (server.ollama_client); one that sends
            # a credential we do not recognise (Basic, an unknown scheme) is refused.
            client = self._ollama_client
        if client is None:
            if _is_preflight(request):
                return None
            raise Unauthorized(
                "Missing or wrong token: send your client's token (clients[].token) as "
                "'Authorization: Bearer <token>' or 'x-api-key: <token>'."
            )
        return self._admitted(client, request, admin_only=admin_only)

    def _remember(self, sent: Sequence[str], client: Client | None) -> None:
        """Keep an Authorization value that carried a valid token (so a bounded few)."""
        if len(sent) == 1:
            if len(self._known) > 256:
                self._known.clear()
            self._known[sent[0]] = client

    def _admitted(
        self, client: Client | None, request: web.Request, *, admin_only: bool
    ) -> Client | None:
        if client is not None and admin_only:
            admin = "server.auth_token" if self._token is not None else "server.auth_token (unset)"
            raise AdminOnly(
                f"{request.path} is for the admin: send {admin}, not client {client.name!r}'s "
                "token."
            )
        return client

    def _on_ollama_port(self, request: web.Request) -> bool:
        if self._ollama_client is None or request.transport is None:
            return False
        local = request.transport.get_extra_info("sockname")
        return bool(local) and local[1] == self._ollama_port

    def _check_host(self, host: str, request: web.Request) -> None:
        name = _host_name(host)
        if name not in self._allowed and not (self._any_host and _is_own_address(name, request)):
            raise MisdirectedRequest(
                f"Host '{host}' is not allowed: localrouter answers only to "
                f"{', '.join(sorted(self._allowed))} (DNS rebinding protection). Use "
                "http://127.0.0.1:<port>/v1, or add the name to server.allowed_hosts."
            )
        if len(self._hosts_ok) > 256:  # a bounded memo of the few Host values clients send
            self._hosts_ok.clear()
        self._hosts_ok.add(host)


def _is_own_address(name: str, request: web.Request) -> bool:
    """Whether `name` is the address this connection reached (on a wildcard bind, a client
    on the LAN may use the machine's address; a rebinding attack uses a name, never that)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    local = request.transport.get_extra_info("sockname") if request.transport else None
    if not local:
        return False
    try:
        reached = ipaddress.ip_address(str(local[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(reached, ipaddress.IPv6Address) and reached.ipv4_mapped is not None:
        reached = reached.ipv4_mapped  # a dual-stack socket reached over IPv4
    return reached == address


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def _host_name(host: str) -> str:
    """The name in a Host header, without the port and brackets; lowercase. Anything after
    the closing bracket but a port (`[::1]evil.com`) leaves the whole value, never allowed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else None
        if rest is None or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return host
        return host[1:end]
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        try:
            ipaddress.IPv6Address(host)  # a bare IPv6 address has colons but no port
        except ValueError:
            return name
    return host


def _presented(request: web.Request) -> str | None:
    """The token a request carries: `Authorization: Bearer`, or `x-api-key` (Anthropic
    clients' way)."""
    sent = request.headers.getall(hdrs.AUTHORIZATION, ())
    if len(sent) > 1:
        raise TwoCredentials(
            "The request carries more than one Authorization header; send exactly one."
        )
    if not sent:
        api_key = request.headers.get("x-api-key")
        return api_key.strip() if api_key is not None else None
    scheme, _, given = sent[0].partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _is_token(presented: str | None, token: bytes) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), token)


def add_cors(request: web.Request, response: web.StreamResponse) -> None:
    """Let a browser page read the response when its Origin is in server.cors_origins."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and request.app[GUARD].allows_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = _vary(response.headers.get("Vary"), "Origin")


def _vary(existing: str | None, name: str) -> str:
    return f"{existing}, {name}" if existing else name
