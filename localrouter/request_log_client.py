"""`localrouter requests`: the running daemon's request log as a table (`--client`, `--model`,
`--failed`), one request in full (`requests show ID`), or each request as it ends
(`--follow`, the log's live stream)."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

import orjson

from localrouter.base.errors import DaemonError
from localrouter.daemon_client import call_daemon, table

COLUMNS = ("time", "id", "client", "route", "model", "status", "attempts", "ms", "cost $")


def requests_command(base: str, token: str | None, args: argparse.Namespace) -> int:
    what = args.what or []
    if what[:1] == ["show"]:
        if len(what) != 2:
            raise DaemonError("requests show: give one request id (x-localrouter-request-id)")
        one = call_daemon(base, token, "GET", f"/api/requests/{urllib.parse.quote(what[1])}")
        print(orjson.dumps(one["data"], option=orjson.OPT_INDENT_2).decode())
        return 0
    if what:
        raise DaemonError(f"requests: unknown {what[0]!r}; use `requests show ID` or options")
    if args.follow:
        return _follow(base, token)
    query = {"limit": str(args.limit)}
    query.update({name: value for name in ("client", "model") if (value := getattr(args, name))})
    if args.failed:
        query["status"] = "failed"
    rows = call_daemon(base, token, "GET", f"/api/requests?{urllib.parse.urlencode(query)}")
    print(table([COLUMNS, *(_row(record) for record in rows["data"])]))
    return 0


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    cost = record.get("cost_usd")
    status = str(record["status"]) + (" (left)" if record.get("cancelled") else "")
    return (
        datetime.fromtimestamp(record["started_at"]).strftime("%m-%d %H:%M:%S"),
        record["id"],
        record.get("client") or "-",
        record["route"],
        record.get("model") or record.get("requested_model") or "-",
        status,
        str(record.get("attempts", 0)),
        f"{record.get('duration_ms', 0):.0f}",
        f"{cost:.6f}" if cost is not None else "-",
    )


def _follow(base: str, token: str | None) -> int:
    """Each record as it ends, a line each, until interrupted."""
    request = urllib.request.Request(base + "/api/requests/stream")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    print("  ".join(COLUMNS), flush=True)
    try:
        with urllib.request.urlopen(request) as stream:
            for line in stream:
                if line.startswith(b"data:"):
                    print("  ".join(_row(orjson.loads(line[5:]))), flush=True)
    except urllib.error.HTTPError as exc:
        raise DaemonError(f"GET /api/requests/stream: HTTP {exc.code}") from None
    except OSError as exc:
        raise DaemonError(f"the stream from {base} ended: {exc}") from None
    except KeyboardInterrupt:
        pass
    return 0
