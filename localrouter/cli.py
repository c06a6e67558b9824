"""The command line: serve, check, models, cache, catalog, service. Thin: every command calls
the library."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from localrouter import __version__
from localrouter.base.errors import ConfigError, UpstreamError
from localrouter.catalog import load_catalog
from localrouter.catalog_update import (
    LITELLM_URL,
    MODELS_DEV_URL,
    OPENROUTER_URL,
    SourceUrls,
    match_body,
    update_catalog,
)
from localrouter.config.describe import describe
from localrouter.config.loading import (
    APP_NAME,
    EMBEDDED_DEFAULT,
    LoadedConfig,
    literal_secrets_exposed,
    load_config,
    load_server_config,
    watch_path,
)
from localrouter.config.server import WILDCARD_HOSTS
from localrouter.daemon_client import client_command, run_command
from localrouter.providers import PROVIDERS
from localrouter.request_log_client import requests_command
from localrouter.systemd import install_unit, private_tmp_warning


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "catalog":
        return _catalog(args)
    if args.command == "open":
        return _open(args.config)
    if args.command == "service":
        target, commands = install_unit(_config_home())
        print(f"wrote {target}\nthen run:\n{commands}")
        if warning := private_tmp_warning(sys.prefix):
            print(warning, file=sys.stderr)
        return 0
    try:
        if args.command in ("models", "cache", "usage", "limits", "requests", "discover"):
            command = requests_command if args.command == "requests" else client_command
            return run_command(command, args, load_server_config(args.config))
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(f"localrouter: invalid config\n{exc}", file=sys.stderr)
        return 1
    _warn_if_exposed(loaded)
    if args.command == "check":
        print(describe(loaded))
        return 0
    return _serve(loaded, args)


def _open(config: Path | None) -> int:
    """The console's address, opened in the user's browser (printed as well, for a machine
    without one)."""
    try:
        server = load_server_config(config)
    except ConfigError as exc:
        print(f"localrouter: invalid config\n{exc}", file=sys.stderr)
        return 1
    host = "127.0.0.1" if server.host in WILDCARD_HOSTS else server.host
    url = f"http://{host}:{server.port}/ui"
    print(url)
    webbrowser.open(url)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localrouter", description="A local OpenAI-compatible gateway for all your models."
    )
    parser.add_argument("--version", action="version", version=f"localrouter {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: server.port, 8741)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = commands.add_parser("check", help="validate the config and show what it resolves to")
    models = commands.add_parser("models", help="list the running daemon's models")
    models.add_argument("--provider", help="only this instance")
    models.add_argument("--json", action="store_true", help="the raw /v1/models JSON")
    usage = commands.add_parser("usage", help="what the running daemon's calls used and cost")
    usage.add_argument("--since", default="7d", help="7d, 12h, 2w, a date or unix time (7d)")
    usage.add_argument(
        "--by", default="day", choices=["day", "client", "model", "instance", "route"]
    )
    usage.add_argument("--csv", action="store_true", help="the rows as CSV")
    limits = commands.add_parser("limits", help="every client's limits and budgets, as they stand")
    opened = commands.add_parser("open", help="open the console (/ui) in your browser")
    opened.add_argument("--config", type=Path, help="config file (default: see README)")
    discover = commands.add_parser("discover", help="the local servers the daemon finds")
    discover.add_argument(
        "--config-snippet", action="store_true", help="providers: entries for what serves"
    )
    requests = commands.add_parser("requests", help="the running daemon's request log")
    requests.add_argument("what", nargs="*", help="show ID: one request with its bodies")
    requests.add_argument("--client", help="only this client's")
    requests.add_argument("--model", help="only calls to this id or alias")
    requests.add_argument("--failed", action="store_true", help="only failed requests")
    requests.add_argument("--limit", type=int, default=50, help="how many, newest first (50)")
    requests.add_argument("--follow", action="store_true", help="each request as it ends")
    cache = commands.add_parser("cache", help="the running daemon's model-list cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    stats = cache_commands.add_parser("stats", help="hits, misses and each instance's state")
    clear = cache_commands.add_parser("clear", help="mark lists expired (kept until refreshed)")
    clear.add_argument("instance", nargs="?", help="only this instance")
    for command in (serve, check, models, usage, limits, requests, discover, stats, clear):
        command.add_argument("--config", type=Path, help="config file (default: see README)")
    catalog = commands.add_parser("catalog", help="the model catalog").add_subparsers(
        dest="catalog_command", required=True
    )
    match = catalog.add_parser("match", help="match a provider response file to the catalog")
    match.add_argument("file", type=Path)
    match.add_argument("--provider", required=True, choices=sorted(PROVIDERS))
    service = commands.add_parser("service", help="the systemd user service")
    service.add_subparsers(dest="service_command", required=True).add_parser(
        "install", help="write ~/.config/systemd/user/localrouter.service"
    )
    sources = "the live OpenRouter and models.dev lists and LiteLLM's cost map"
    update = catalog.add_parser(
        "update",
        help=f"fetch {sources}",
        description=f"Fetch {sources}, build the catalog from them and keep it in the cache "
        "directory, where the running daemon picks it up at its next list refresh.",
    )
    update.add_argument("--openrouter-url", default=OPENROUTER_URL, help="(default: %(default)s)")
    update.add_argument("--models-dev-url", default=MODELS_DEV_URL, help="(default: %(default)s)")
    update.add_argument("--litellm-url", default=LITELLM_URL, help="(default: %(default)s)")
    return parser


def _config_home() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path.home() / ".config"


def cache_dir() -> Path:
    """Where the daemon keeps what it writes: $XDG_CACHE_HOME/localrouter."""
    return platformdirs.user_cache_path(APP_NAME)


def _catalog(args: argparse.Namespace) -> int:
    if args.catalog_command == "match":
        try:
            body = args.file.read_bytes()
            report = asyncio.run(match_body(body, args.provider, load_catalog(cache_dir())))
        except OSError as exc:
            print(f"localrouter: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
        except UpstreamError as exc:
            print(f"localrouter: {args.file}: {exc.message}", file=sys.stderr)
            return 1
        print(report.render())
        return 0
    try:
        urls = SourceUrls(args.openrouter_url, args.models_dev_url, args.litellm_url)
        print(update_catalog(cache_dir(), urls))
    except UpstreamError as exc:
        print(f"localrouter: catalog not updated: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _warn_if_exposed(loaded: LoadedConfig) -> None:
    if warning := loaded.settings.server.exposure_warning():
        print(f"localrouter: warning: {warning}", file=sys.stderr)
    if loaded.origin == EMBEDDED_DEFAULT:
        return
    exposed = literal_secrets_exposed(Path(loaded.origin))
    if exposed:
        print(
            f"localrouter: warning: {loaded.origin} holds secrets ({', '.join(exposed)}) and "
            f"other users can read it: chmod 600 {loaded.origin}, or use ${{VAR}} references",
            file=sys.stderr,
        )


def _serve(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from localrouter.serve import run

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value}
    return run(
        loaded.settings.with_server(overrides),
        server_overrides=overrides,
        config_origin=loaded.origin,
        config_path=watch_path(args.config, os.environ),
        log_level=args.log_level,
        cache_dir=cache_dir(),
        state_dir=platformdirs.user_state_path(APP_NAME),
    )
