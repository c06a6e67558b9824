"""The console's static files: `index.html` for every page's path (/ui, /ui/models, ...), and
the assets under /ui/assets/<version>/..., where the version is a hash of every asset's bytes:
a path names one content forever, so assets are cached for a year and a release never mixes
old and new files. Every answer carries a strict Content-Security-Policy (no inline script,
no eval, nothing from elsewhere)."""

from __future__ import annotations

import hashlib
import mimetypes
from importlib import resources
from pathlib import PurePosixPath

from aiohttp import web

from localrouter.base.errors import NotFound

VERSION_MARK = "{{version}}"  # in index.html: where the assets' version goes
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
FOREVER = "public, max-age=31536000, immutable"
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


class ConsoleAssets:
    """The package's console/static files, read once."""

    def __init__(self) -> None:
        root = resources.files("localrouter.console") / "static"
        self._files: dict[str, bytes] = {}
        stack = [(root, PurePosixPath())]
        while stack:
            folder, prefix = stack.pop()
            for entry in folder.iterdir():
                if entry.is_dir():
                    stack.append((entry, prefix / entry.name))
                else:
                    self._files[str(prefix / entry.name)] = entry.read_bytes()
        digest = hashlib.sha256()
        for name in sorted(self._files):
            digest.update(name.encode() + b"\0" + self._files[name])
        self.version = digest.hexdigest()[:12]
        template = self._files.pop("index.html").decode()
        self._index = template.replace(VERSION_MARK, self.version).encode()

    @property
    def names(self) -> list[str]:
        return sorted(self._files)

    async def page(self, _: web.Request) -> web.Response:
        """index.html, for every page's path: the script routes by the path."""
        return web.Response(
            body=self._index,
            content_type="text/html",
            charset="utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def asset(self, request: web.Request) -> web.Response:
        version, name = request.match_info["version"], request.match_info["name"]
        body = self._files.get(name)
        if body is None or version != self.version:
            raise NotFound(f"No console asset {name[:80]!r} in this version.")
        suffix = PurePosixPath(name).suffix
        kind = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.Response(
            body=body, content_type=kind, headers={**SECURITY_HEADERS, "Cache-Control": FOREVER}
        )
