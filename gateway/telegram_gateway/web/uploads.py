"""Multipart uploads on ``/send``: spooled under ``<GATEWAY_STATE_DIR>/uploads``, bounded for
the whole gateway (every worker together).

* at most ``GATEWAY_UPLOAD_CONCURRENCY`` uploads at once, else 503 with ``Retry-After``;
* at most ``GATEWAY_UPLOAD_MAX_BYTES`` of them on disk, counting each upload at its
  ``Content-Length`` (the file cannot be larger than the body that carries it): 503 with
  ``Retry-After`` while others hold the room, 413 when the upload alone is larger;
* a multipart body without ``Content-Length`` (chunked) is 411: its size cannot be reserved.

The spool directory is the ledger the workers share: an upload first creates its spool file,
named ``<worker pid>.<random>.<Content-Length>``, and only then counts the files in the
directory; finding itself over a limit, it removes its file and refuses. Two workers racing
for the last room may both refuse; they never both get it. The file is removed when the
request ends, whatever the outcome; ``gunicorn.conf.py`` removes a dead worker's files
(``child_exit``) and empties the directory when the gateway starts.

The multipart body itself is parsed by werkzeug (``parse_form_data``) with this module's
stream factory, so the file part is written to the spool file as it arrives.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from telegram_gateway.errors import InvalidRequest

RETRY_AFTER = 5  # seconds a refused upload is told to wait


class UploadRefused(Exception):
    """The upload cannot be taken now (503) or at all (411, 413); ``str()`` says why."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


@dataclass
class SpoolFile:
    """The reserved spool file; werkzeug's stream factory for the request's one file part."""

    file: IO[bytes]
    used: bool = False

    def __call__(self, *_: Any, **__: Any) -> IO[bytes]:
        if self.used:
            raise InvalidRequest("body", "one file per message")
        self.used = True
        return self.file


class UploadSpool:
    def __init__(self, directory: Path, concurrency: int, max_bytes: int) -> None:
        self.directory = directory
        self.concurrency = concurrency
        self.max_bytes = max_bytes

    @contextmanager
    def reserve(self, declared: int | None) -> Iterator[SpoolFile]:
        """Room for an upload carried by a body of ``declared`` bytes, or UploadRefused."""
        if declared is None:
            raise UploadRefused(411, "a multipart/form-data body needs a Content-Length")
        if declared > self.max_bytes:
            raise UploadRefused(
                413,
                f"body: the upload ({declared} bytes) is larger than the gateway's upload room "
                f"(GATEWAY_UPLOAD_MAX_BYTES={self.max_bytes})",
            )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}.{secrets.token_hex(8)}.{declared}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w+b") as file:
                count, total = self.usage()
                if count > self.concurrency:
                    raise UploadRefused(
                        503,
                        f"{self.concurrency} uploads are in progress already "
                        "(GATEWAY_UPLOAD_CONCURRENCY); retry later",
                        RETRY_AFTER,
                    )
                if total > self.max_bytes:
                    raise UploadRefused(
                        503,
                        f"uploads in progress use the upload room (GATEWAY_UPLOAD_MAX_BYTES="
                        f"{self.max_bytes}); retry later",
                        RETRY_AFTER,
                    )
                yield SpoolFile(file)
        finally:
            path.unlink(missing_ok=True)

    def usage(self) -> tuple[int, int]:
        """(uploads in the spool directory, bytes reserved by them)."""
        count = total = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                declared = entry.name.rpartition(".")[2]
                if declared.isdigit() and declared.isascii():
                    size = int(declared)
                else:  # not one of ours: count what it holds
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:
                        continue
                count += 1
                total += size
        return count, total
