"""Last-known-good model lists on disk, one file per instance, written atomically.

A file is used only for the instance it was written for (same name, type and base URL); a
corrupt, truncated or foreign file is ignored with a warning. Lists fetched with a caller's key
are never written.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from pathlib import Path

import orjson
import structlog

from localrouter.base.jsonload import INLINE_BYTES, loads_in_steps
from localrouter.base.offload import heavy
from localrouter.base.secrets import display_url
from localrouter.lists.cache import ModelList, Source
from localrouter.lists.codec import models_document, read_model
from localrouter.providers.base import ModelInfo
from localrouter.providers.parsing import sane_models

log = structlog.get_logger(__name__)

FORMAT = 1
MAX_FILE_BYTES = 64 * 1024 * 1024  # a 100,000-model list takes about 30 MB


def write_atomically(target: Path, data: bytes | bytearray) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ListStore:
    """Where one instance's last-known-good list lives, and how it is read back."""

    def __init__(self, directory: Path, name: str, provider_type: str, base_url: str) -> None:
        self.path = directory / f"{name}.json"
        self._identity = {
            "instance": name,
            "type": provider_type,
            "base_url": display_url(base_url),
        }
        self._written: tuple[ModelInfo, ...] | None = None
        self._pending: asyncio.Task[None] | None = None

    async def load(self) -> ModelList | None:
        """The list in the file, read and decoded in a worker thread; None (with a warning)
        for anything but a regular file of ours within MAX_FILE_BYTES."""
        # Not in the heavy-work thread: a fallback read must not queue behind a long parse
        # (it would miss models_deadline_seconds); it runs once per instance at most.
        return await asyncio.to_thread(self._load)

    def _load(self) -> ModelList | None:
        raw = self._read()
        if raw is None:
            return None
        try:
            document = loads_in_steps(raw) if len(raw) > INLINE_BYTES else orjson.loads(raw)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                self._ignore("not a localrouter list file")
                return None
            if any(document.get(key) != value for key, value in self._identity.items()):
                self._ignore("written for another instance or URL")
                return None
            listed = [read_model(item) for item in document["models"]]
            models = tuple(sane_models(listed, self._identity["instance"]))
            fetched_at = float(document["fetched_at"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            self._ignore(f"corrupt or truncated ({type(exc).__name__})")
            return None
        self._written = models
        return ModelList(models, Source.PERSISTED, fetched_at, fetched_at)

    def _read(self) -> bytes | None:
        # O_NOFOLLOW: a link (to /dev/zero, or out of the directory) is refused, not followed;
        # O_NONBLOCK: opening a FIFO does not wait for a writer. Then only a regular file of
        # bounded size is read.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            handle = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._ignore(f"cannot open it ({exc.strerror}); is it a link?")
            return None
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            os.close(handle)
            too_big = stat.S_ISREG(info.st_mode)
            self._ignore(f"larger than {MAX_FILE_BYTES} bytes" if too_big else "not a file")
            return None
        with os.fdopen(handle, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            self._ignore(f"larger than {MAX_FILE_BYTES} bytes")
            return None
        return raw

    def save_soon(self, models: ModelList) -> None:
        """Write the list in a worker thread (serialising 100,000 models takes a second),
        unless it is what the file already holds; writes land in order."""
        previous = self._pending
        self._pending = asyncio.create_task(self._write(previous, models))

    async def flush(self) -> None:
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)

    async def _write(self, previous: asyncio.Task[None] | None, models: ModelList) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await heavy(lambda: self._save(models), len(models.models))
        except OSError as exc:
            log.warning("persist.write_failed", path=str(self.path), error=exc.strerror)

    def _save(self, models: ModelList) -> None:
        if models.models == self._written:
            return
        try:
            head = {"format": FORMAT, **self._identity, "fetched_at": models.fetched_at}
            data = models_document(head, models.models)
        except orjson.JSONEncodeError as exc:
            log.error("persist.unserialisable", path=str(self.path), error=str(exc))
            return
        write_atomically(self.path, data)
        self._written = models.models

    def _ignore(self, why: str) -> None:
        log.warning("persist.file_ignored", path=str(self.path), reason=why)
        return
