"""Received files: the bytes of what users send, for agents, never the token.

In ``--local`` mode the Bot API server downloads a file on ``getFile`` into the bot's own
folder under its ``--dir`` and answers its path there; the folder is named after the token
(``<dir>/<bot id>:<secret>/documents/file_3.pdf``), and the server has no HTTP route to the
bytes. So the gateway, which holds the token anyway, calls ``getFile`` itself and reads the
file from disk -- only when the file's real path (symlinks resolved) lies inside that bot's
folder under ``TELEGRAM_API_DIR``, whatever path the server answers. A relative ``file_path``
(the server without ``--local``) is relative to the same folder. The file is opened without
following a final symlink and checked again through the open descriptor, so a path swapped
after the check is not read either.

Agents get the bytes two ways:

* NATS ``telegram.files.<bot>.get`` with ``{"file_id": …}``: the file is stored in the
  Object Store bucket ``TELEGRAM_FILES`` under its ``file_unique_id`` and the reply names it
  (``{"ok":true,"result":{"bucket","name","size","file_id","file_unique_id","file_path"}}``);
  the agent reads it with its object store client. An object stored less than half the
  bucket's TTL ago is answered again without storing it anew, so an answered object is kept
  at least ``GATEWAY_FILES_TTL / 2``. Files larger than ``GATEWAY_FILES_MAX_BYTES``: 413.
* HTTP ``GET /files/<bot>/<file_id>`` (:mod:`telegram_gateway.web.files`) streams it.

Routing rules with ``store_files: true`` store the files of the updates they match before the
routed copy is sent (:meth:`ReceivedFiles.store_update_files`).

Errors are :class:`FileProblem` with an HTTP-like code: 400 malformed request, 403 the server
named a file outside the bot's folder, 404 unknown ``file_id`` (Telegram's own description),
413 too large for the bucket, 502 the Bot API failed or the file cannot be read, 503 NATS or
the bucket unusable, 504 the Bot API did not answer within :data:`GETFILE_TIMEOUT`.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from telegram_gateway import metrics
from telegram_gateway.botapi import BotApiClient
from telegram_gateway.bus import FILES_BUCKET, Bus, Request, StoredObject
from telegram_gateway.config import BotConfig, Settings
from telegram_gateway.errors import BotApiError, BotApiTimeout, BusError, TelegramError
from telegram_gateway.health import Check
from telegram_gateway.redact import bot_folder_names
from telegram_gateway.replies import relative_file_path

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "telegram.files"
QUEUE_GROUP = "telegram-gateway"
FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
# Update fields that hold a message, and the message fields that hold a file
MESSAGE_FIELDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
)
MEDIA_FIELDS = ("document", "voice", "audio", "video", "video_note", "animation", "sticker")
STORE_RATE = 5 * 1024**2  # bytes/s a put is given at least (its timeout), beyond 30 s
# getFile may first download the file from Telegram (up to 2000 MB in local mode): it gets
# this long, not GATEWAY_BOTAPI_TIMEOUT
GETFILE_TIMEOUT = 300.0


class FileProblem(Exception):
    """Why a file cannot be given: an HTTP-like ``status`` and a description for the agent."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description

    def envelope(self) -> dict[str, Any]:
        return {"ok": False, "error_code": self.status, "description": self.description}


@dataclass(frozen=True)
class ReceivedFile:
    """A file the Bot API server holds for a bot: what agents may see, and its real path."""

    file_id: str
    file_unique_id: str
    file_path: str  # relative to the bot's folder: no token
    path: Path  # real path, inside the bot's folder under TELEGRAM_API_DIR

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def content_type(self) -> str:
        return mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"


@dataclass
class _NameLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class ReceivedFiles:
    """Locates, streams and stores received files; serves ``telegram.files.<bot>.get``."""

    def __init__(self, settings: Settings, bus: Bus, clients: dict[int, BotApiClient]) -> None:
        self.settings = settings
        self.bus = bus
        self.clients = clients
        self.subjects: list[str] = []
        self._locks: dict[str, _NameLock] = {}
        self._locks_guard = threading.Lock()

    # ---- component -----------------------------------------------------------------------
    def start(self) -> None:
        for bot in self.settings.bots:
            for ref in dict.fromkeys([str(bot.bot_id), bot.name]):
                if ref:
                    subject = f"{SUBJECT_PREFIX}.{ref}.get"
                    self.bus.serve(subject, self.handle, QUEUE_GROUP)
                    self.subjects.append(subject)

    def stop(self) -> None:
        pass

    def checks(self) -> dict[str, Check]:
        return {}

    # ---- locating and reading ---------------------------------------------------------------
    def locate(self, bot: BotConfig, file_id: Any) -> ReceivedFile:
        """``getFile`` with the bot's token, then the file's real path, checked."""
        if not isinstance(file_id, str) or not FILE_ID.match(file_id):
            raise FileProblem(
                400, "Bad Request: file_id must be a Bot API file_id (1-1024 of A-Z a-z 0-9 _ -)"
            )
        client = self.clients[bot.bot_id]
        try:
            result = client.call("getFile", {"file_id": file_id}, timeout=GETFILE_TIMEOUT)
        except TelegramError as exc:
            if exc.error_code == 400:
                raise FileProblem(404, f"Not Found: {exc.description}") from None
            raise FileProblem(502, f"Bad Gateway: getFile failed: {exc.description}") from None
        except BotApiTimeout as exc:
            raise FileProblem(504, f"Gateway Timeout: {exc}") from None
        except BotApiError as exc:
            raise FileProblem(502, f"Bad Gateway: {exc}") from None
        if not isinstance(result, dict) or not isinstance(result.get("file_path"), str):
            raise FileProblem(
                502, "Bad Gateway: getFile answered no file_path (the file is not downloadable)"
            )
        served = str(result["file_path"])
        return ReceivedFile(
            file_id=str(result.get("file_id") or file_id),
            file_unique_id=str(result.get("file_unique_id") or ""),
            file_path=relative_file_path(served, bot.token),
            path=self._inside_bot_folder(bot, served),
        )

    def _inside_bot_folder(self, bot: BotConfig, served: str) -> Path:
        """The real path of ``served`` when it lies inside the bot's folder under
        TELEGRAM_API_DIR (the folder itself must be there too, not a link elsewhere)."""
        api_dir = Path(os.path.realpath(self.settings.telegram_api_dir))
        folders = [api_dir / name for name in bot_folder_names(bot.token)]
        candidates = [Path(served)] if served.startswith("/") else [f / served for f in folders]
        allowed = [Path(os.path.realpath(folder)) for folder in folders]
        allowed = [folder for folder in allowed if folder.is_relative_to(api_dir)]
        inside: list[Path] = []
        outside = False
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            if any(real != folder and real.is_relative_to(folder) for folder in allowed):
                inside.append(real)
            else:
                outside = outside or real.exists() or served.startswith("/")
        existing = [path for path in inside if path.exists()]
        if existing:
            return existing[0]
        if outside or not inside:
            raise FileProblem(
                403,
                "Forbidden: the Bot API server named a file outside this bot's folder under "
                "TELEGRAM_API_DIR; the gateway reads received files only there",
            )
        return inside[0]  # nothing there: opening it says so

    def open(self, received: ReceivedFile) -> tuple[BinaryIO, int]:
        """The file opened for reading, and its size. The descriptor is checked once more:
        a regular file, still inside the bot's folder."""
        try:
            fd = os.open(received.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except PermissionError:
            raise FileProblem(
                502,
                "Bad Gateway: the gateway may not read the Bot API server's file (permission "
                "denied); its user needs the Bot API server's group (README, Files)",
            ) from None
        except FileNotFoundError:
            raise FileProblem(
                502, "Bad Gateway: the file the Bot API server named does not exist"
            ) from None
        except OSError as exc:  # ELOOP: a symlink in the last place
            raise FileProblem(
                403, f"Forbidden: the Bot API server's file cannot be opened ({exc.strerror})"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileProblem(403, "Forbidden: the Bot API server named no regular file")
            opened = _opened_path(fd)
            if opened is not None and opened != received.path:
                raise FileProblem(403, "Forbidden: the file changed while it was opened")
            return os.fdopen(fd, "rb"), info.st_size
        except BaseException:
            os.close(fd)
            raise

    # ---- the Object Store -------------------------------------------------------------------
    def store(self, bot: BotConfig, file_id: Any, via: str) -> dict[str, Any]:
        """Store the file in :data:`~telegram_gateway.bus.FILES_BUCKET` (or find it there,
        stored recently enough); the ``result`` of the NATS reply."""
        received = self.locate(bot, file_id)
        name = received.file_unique_id
        if not FILE_ID.match(name):
            raise FileProblem(502, "Bad Gateway: getFile answered no file_unique_id")
        with self._lock(name):
            reader, size = self.open(received)
            with reader:
                if size > self.settings.files_max_bytes:
                    metrics.FILES.labels(str(bot.bot_id), via, "too_large").inc()
                    raise FileProblem(
                        413,
                        f"Request Entity Too Large: the file has {size} bytes, more than "
                        f"GATEWAY_FILES_MAX_BYTES ({self.settings.files_max_bytes}); "
                        f"fetch it with GET /files/<bot>/<file_id>",
                    )
                stored = self._stored(name, size)
                outcome = "reused"
                if stored is None:
                    stored = self._put(bot, name, reader, size, received.file_path)
                    outcome = "stored"
                    metrics.FILES_BYTES.labels(str(bot.bot_id), via).inc(size)
        metrics.FILES.labels(str(bot.bot_id), via, outcome).inc()
        return {
            "bucket": stored.bucket,
            "name": stored.name,
            "size": stored.size,
            "file_id": received.file_id,
            "file_unique_id": received.file_unique_id,
            "file_path": received.file_path,
        }

    def _stored(self, name: str, size: int) -> StoredObject | None:
        """The object already stored under ``name`` when it is whole and young enough."""
        try:
            found = self.bus.find_object(name)
        except BusError as exc:
            raise FileProblem(503, f"Service Unavailable: {exc}") from None
        if found is None or found.size != size or found.age > self.settings.files_ttl / 2:
            return None
        return found

    def _put(
        self, bot: BotConfig, name: str, reader: BinaryIO, size: int, file_path: str
    ) -> StoredObject:
        timeout = 30 + size / STORE_RATE
        try:
            return self.bus.put_object(name, reader, f"bot {bot.bot_id}: {file_path}", timeout)
        except BusError as exc:
            raise FileProblem(503, f"Service Unavailable: {exc}") from None
        except Exception as exc:  # JetStream's own refusals (bucket full, ...)
            logger.warning(
                "storing a file of bot %s in %s failed: %s", bot.label, FILES_BUCKET, exc
            )
            raise FileProblem(
                503, f"Service Unavailable: {FILES_BUCKET} refused the file ({exc})"
            ) from None

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """One store of a name at a time in this worker (a second request waits, then finds
        the object stored)."""
        with self._locks_guard:
            entry = self._locks.setdefault(name, _NameLock())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._locks_guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[name]

    def store_update_files(self, bot: BotConfig, update: dict[str, Any]) -> int:
        """Store every file of the update's message (the largest photo size); problems are
        logged, never raised. Returns how many files are in the bucket now."""
        done = 0
        for file_id in files_of(update):
            try:
                self.store(bot, file_id, "route")
                done += 1
            except FileProblem as exc:
                metrics.FILES.labels(str(bot.bot_id), "route", "failed").inc()
                logger.warning("bot %s: a routed update's file was not stored: %s", bot.label, exc)
        return done

    # ---- NATS -------------------------------------------------------------------------------
    def handle(self, request: Request) -> bytes:
        """``telegram.files.<bot>.get``: never raises."""
        try:
            return _dump({"ok": True, "result": self._handle(request)})
        except FileProblem as exc:
            return _dump(exc.envelope())
        except Exception:
            logger.exception("%s request failed", request.subject)
            return _dump(
                FileProblem(500, "Internal Server Error: see the gateway's log").envelope()
            )

    def _handle(self, request: Request) -> dict[str, Any]:
        tokens = request.subject.split(".")
        bot = self.settings.bot(tokens[2]) if len(tokens) == 4 else None
        if bot is None:
            raise FileProblem(404, f"Not Found: no bot for subject {request.subject}")
        try:
            params = json.loads(request.data) if request.data.strip() else None
        except ValueError:
            params = None
        if not isinstance(params, dict) or "file_id" not in params:
            raise FileProblem(
                400, 'Bad Request: the payload must be a JSON object {"file_id": "<file_id>"}'
            )
        return self.store(bot, params["file_id"], "nats")


def files_of(update: dict[str, Any]) -> list[str]:
    """The file_ids of the files an update's message carries (photo: its largest size)."""
    found: list[str] = []
    for field_name in MESSAGE_FIELDS:
        message = update.get(field_name)
        if not isinstance(message, dict):
            continue
        for media in MEDIA_FIELDS:
            item = message.get(media)
            if isinstance(item, dict) and isinstance(item.get("file_id"), str):
                found.append(item["file_id"])
        photo = message.get("photo")
        if isinstance(photo, list) and photo:
            sizes = [size for size in photo if isinstance(size, dict) and size.get("file_id")]
            if sizes:
                largest = max(
                    sizes, key=lambda size: (size.get("file_size") or 0, size.get("width") or 0)
                )
                found.append(str(largest["file_id"]))
    return list(dict.fromkeys(found))


def _opened_path(fd: int) -> Path | None:
    """The path the kernel has for an open descriptor (Linux), None where unknown."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
