"""`localrouter models`, `cache ...`, `usage` and `limits`: ask the running daemon over HTTP."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from localrouter.base.errors import DaemonError
from localrouter.config.server import WILDCARD_HOSTS, ServerSettings

PER_MILLION = 1_000_000


# A command that asks the daemon at `base` (with `token`, if the config sets one).
Command = Callable[[str, str | None, argparse.Namespace], int]


def run_command(command: Command, args: argparse.Namespace, server: ServerSettings) -> int:
    """`command` against the daemon `server` describes; its failure said in one line."""
    host = "127.0.0.1" if server.host in WILDCARD_HOSTS else server.host
    base = f"http://{host}:{server.port}"
    token = server.auth_token.get_secret_value() if server.auth_token else None
    try:
        return command(base, token, args)
    except DaemonError as exc:
        print(f"localrouter: {exc}", file=sys.stderr)
        return 1


def client_command(base: str, token: str | None, args: argparse.Namespace) -> int:
    """`models`, `usage`, `discover`, `limits` and `cache ...`."""
    if args.command == "models":
        return _models(base, token, args.provider, as_json=args.json)
    if args.command == "usage":
        return _usage(base, token, since=args.since, by=args.by, as_csv=args.csv)
    if args.command == "discover":
        return _discover(base, token, snippet=args.config_snippet)
    if args.command == "limits":
        print(_table_of_limits(call_daemon(base, token, "GET", "/api/limits")))
        return 0
    if args.cache_command == "stats":
        print(_table_of_stats(call_daemon(base, token, "GET", "/api/cache/stats")))
        return 0
    body = {"instance": args.instance} if args.instance else {}
    answer = call_daemon(base, token, "POST", "/api/cache/clear", body)
    print(f"marked expired (kept until refreshed): {', '.join(answer['cleared']) or 'nothing'}")
    return 0


def call_daemon(base: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    return orjson.loads(fetch(base, token, method, path, body))


def fetch(base: str, token: str | None, method: str, path: str, body: Any = None) -> bytes:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: bytes = response.read()
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise DaemonError(f"{method} {path}: HTTP {exc.code}: {message}") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise DaemonError(
            f"cannot reach the daemon at {base} ({reason}); is `localrouter serve` running?"
        ) from None


def _models(base: str, token: str | None, provider: str | None, *, as_json: bool) -> int:
    listing = call_daemon(base, token, "GET", "/v1/models")
    models = [m for m in listing["data"] if provider is None or m["owned_by"] == provider]
    if as_json:
        print(orjson.dumps({"object": "list", "data": models}, option=orjson.OPT_INDENT_2).decode())
        return 0
    rows = [("id", "context", "prompt $/1M", "completion $/1M", "source")]
    for model in models:
        pricing = model.get("pricing", {})
        rows.append(
            (
                model["id"],
                str(model.get("context_length", "")),
                _per_million(pricing.get("prompt")),
                _per_million(pricing.get("completion")),
                model.get("source", ""),
            )
        )
    print(table(rows))
    print(f"{len(models)} models")
    return 0


def _usage(base: str, token: str | None, *, since: str, by: str, as_csv: bool) -> int:
    query = urllib.parse.urlencode(
        {"since": since, "group_by": by, "format": "csv" if as_csv else "json"}
    )
    if as_csv:
        sys.stdout.write(fetch(base, token, "GET", f"/api/usage?{query}").decode())
        return 0
    rows = call_daemon(base, token, "GET", f"/api/usage?{query}")["data"]
    print(_table_of_usage(rows, by))
    return 0


USAGE_COLUMNS = (
    ("requests", "requests"),
    ("failed", "failed"),
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache read"),
    ("cost_usd", "cost $"),
    ("unpriced_requests", "unpriced"),
)


def _table_of_usage(rows: list[dict[str, Any]], by: str) -> str:
    """One line per group and a total; a cost that leaves unpriced requests out says so."""
    lines = [(by, *(title for _, title in USAGE_COLUMNS))]
    sums = dict.fromkeys((name for name, _ in USAGE_COLUMNS), 0.0)
    for row in rows:
        lines.append(
            (str(row.get(by) or "-"), *(_cell(name, row[name]) for name, _ in USAGE_COLUMNS))
        )
        for name, _ in USAGE_COLUMNS:
            sums[name] += row[name] or 0
    lines.append(("total", *(_cell(name, sums[name]) for name, _ in USAGE_COLUMNS)))
    note = ""
    if sums["unpriced_requests"]:
        note = (
            f"\n{sums['unpriced_requests']:.0f} requests went to models with no known price: "
            "their cost is not in these totals (give one with pricing: in the config)."
        )
    return table(lines) + note


def _discover(base: str, token: str | None, *, snippet: bool) -> int:
    """The daemon's probe targets as a table, or a config snippet for what serves."""
    shown = call_daemon(base, token, "GET", "/api/discovery")
    servers = shown["servers"]
    if snippet:
        serving = [row for row in servers if row["state"] == "serving" and row["base_url"]]
        lines = ["providers:"] if serving else ["# no local server answers now"]
        for row in serving:
            lines += [
                f"  - name: {row['name']}",
                f"    type: {row['provider_type']}",
                f"    base_url: {row['base_url']}",
            ]
        print("\n".join(lines))
        return 0
    rows = [("host", "port", "type", "state", "version", "models", "instance")]
    for row in servers:
        rows.append(
            (
                row["host"],
                str(row["port"]),
                row["type"] or "-",
                row["state"] or "not probed yet",
                row["version"] or "-",
                "-" if row["models"] is None else str(row["models"]),
                row["instance"] or "-",
            )
        )
    state = "on" if shown["enabled"] else "off (discovery.enabled: false)"
    print(table(rows) + f"\ndiscovery {state}, every {shown['interval_seconds']:g} s")
    return 0


def _table_of_limits(shown: dict[str, Any]) -> str:
    """One line per limit of each caller: used (and reserved by calls in flight) of what."""
    rows = [("client", "models", "limit", "value", "used", "reserved", "remaining", "resets")]
    for row in shown["data"]:
        dollars = row["limit"].startswith("usd_")
        amounts = [
            f"${row[name]:.4f}" if dollars else f"{row[name]:g}"
            for name in ("value", "used", "reserved", "remaining")
        ]
        who = row["client"] or "(no client)"
        rows.append((who, row["models"], row["limit"], *amounts, row["resets"] or "-"))
    if len(rows) == 1:
        return "no limits configured (limits: or clients[].limits in the config)"
    counted = f"counted: {shown['counted']}; days and months in {shown['timezone']}"
    unpriced = (
        "; calls to models with no known price are outside dollar limits"
        if any(row["limit"].startswith("usd_") for row in shown["data"])
        else ""
    )
    return table(rows) + f"\n{counted}{unpriced}"


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6f}" if name == "cost_usd" else f"{value:.0f}"


def _per_million(price: str | None) -> str:
    if price is None:
        return ""
    return f"{float(price) * PER_MILLION:.4g}"


def _table_of_stats(stats: dict[str, Any]) -> str:
    head = (
        f"hits {stats['hits']}  misses {stats['misses']}  hit rate {stats['hit_rate_percent']} %  "
        f"refreshes {stats['refreshes']}  fallbacks {stats['fallbacks']}"
    )
    rows = [
        ("instance", "source", "models", "age s", "expires in s", "upstream calls", "last error")
    ]
    for name, item in stats["instances"].items():
        rows.append(
            (
                name,
                str(item["source"] or "-"),
                str(item["count"]),
                _number(item["age_seconds"]),
                _number(item["expires_in_seconds"]),
                str(item["upstream_calls"]),
                item["last_error"] or "",
            )
        )
    return head + "\n" + table(rows)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
