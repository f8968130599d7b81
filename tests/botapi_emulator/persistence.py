"""The journal: append-only persistence in ``--dir``, replayed and compacted on start-up."""

from __future__ import annotations

import contextlib
import json
import json.encoder
import os
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from botapi_emulator import received
from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState
from botapi_emulator.encoding import json_bytes
from botapi_emulator.logs import log

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


_QUOTED_TYPES: dict[str, bytes] = {}


def _quote_type(update_type: str) -> bytes:
    quoted = urllib.parse.quote(update_type, safe="").encode()
    if len(_QUOTED_TYPES) < 1000:
        _QUOTED_TYPES[update_type] = quoted
    return quoted


class Journal:
    """Append-only state file, one record per line, flushed before every answer.

    Lines are either JSON records (``{"t": kind, …}``) or updates, stored verbatim so they
    are restored byte for byte: ``u <bot_id> <update_id> <quoted type> <update JSON>``.
    Buffered records are written with one ``write`` before the emulator answers the request
    that produced them, so an answered request survives SIGTERM and kill -9 alike (no fsync:
    an OS crash is out of scope). On start-up the file is replayed and rewritten compactly.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.buffer: list[bytes] = []
        self.fd = -1

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, kind: str, **data: Any) -> None:
        self.buffer.append(json_bytes({"t": kind, **data}) + b"\n")

    def message_id(self, bot_id: int, chat_id: int, message_id: int) -> None:
        """The hot path's record (one per message sent), formatted without json."""
        self.buffer.append(b'{"t":"mid","b":%d,"c":%d,"m":%d}\n' % (bot_id, chat_id, message_id))

    def update(self, bot_id: int, update_id: int, update_type: str, data: bytes) -> None:
        quoted = _QUOTED_TYPES.get(update_type) or _quote_type(update_type)
        self.buffer.append(b"u %d %d %s %s\n" % (bot_id, update_id, quoted, data))

    def flush(self) -> None:
        if not self.buffer or self.fd < 0:
            self.buffer.clear()
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_lines(self) -> Iterable[bytes]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as handle:
            return handle.read().split(b"\n")

    def rewrite(self, lines: Iterable[bytes]) -> None:
        """Replace the file atomically with ``lines`` (the compacted state)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as handle:
            for line in lines:
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):
            dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def restore(emu: Emulator, lines: Iterable[bytes]) -> int:
    """Replay journal lines into ``emu``; return how many records were applied."""
    applied = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            if raw.startswith(b"u "):
                _restore_update(emu, raw)
            else:
                _restore_record(emu, json.loads(raw))
            applied += 1
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("journal: skipped a damaged record (%s)", type(exc).__name__)
    return applied


def _restore_update(emu: Emulator, raw: bytes) -> None:
    _, bot_id, update_id, quoted_type, data = raw.split(b" ", 4)
    bot = emu.bots.get(int(bot_id))
    if bot is None:
        return
    uid = int(update_id)
    if not bot.history:
        bot.base_id = uid
        bot.pending_start = 0
    elif uid != bot.base_id + len(bot.history):
        return
    bot.append_update(data, urllib.parse.unquote(quoted_type.decode()))
    bot.next_update_id = max(bot.next_update_id, uid + 1)


def _restore_record(emu: Emulator, record: dict[str, Any]) -> None:
    kind = record["t"]
    if kind == "bot":
        bot = emu.bots.get(record["id"])
        if bot is None:
            emu.bots[record["id"]] = BotState(
                id=record["id"],
                token=record["token"],
                first_name=record["first_name"],
                username=record["username"],
                next_update_id=record["next"],
                base_id=record["base"],
            )
        else:
            bot.token, bot.first_name = record["token"], record["first_name"]
            bot.username = record["username"]
        return
    if kind == "reset":
        for bot in emu.bots.values():
            bot.reset()
            emu.retired_update_ids[bot.id] = bot.next_update_id
        if record.get("bots"):
            emu.bots.clear()
        emu.files.clear()
        emu.downloads_by_bot.clear()
        return
    bot = emu.bots.get(record["b"])
    if bot is None:
        return
    if kind == "chat":
        spec = record["c"]
        chat = bot.chats.get(spec["id"]) or ChatState(spec["id"], spec["type"])
        chat.type = spec["type"]
        chat.update_from(spec)
        bot.chats[chat.id] = chat
    elif kind == "mid":
        chat = bot.chats.get(record["c"])
        if chat is not None:
            chat.last_message_id = max(chat.last_message_id, record["m"])
    elif kind == "off":
        bot.confirmed_offset = record["c"]
        bot.pending_start = min(max(record["p"] - bot.base_id, 0), len(bot.history))
    elif kind == "allow":
        bot.allowed_updates = record["a"]
    elif kind == "wh":
        bot.webhook = record["w"]
    elif kind == "rfile":
        received.restore_file(emu, record)
    elif kind == "rdl":
        received.restore_download(emu, bot, record)


def snapshot(emu: Emulator) -> Iterable[bytes]:
    """The compact journal: current state only (history kept: it is the control record)."""
    for bot in emu.bots.values():
        yield (
            json_bytes(
                {
                    "t": "bot",
                    "id": bot.id,
                    "token": bot.token,
                    "first_name": bot.first_name,
                    "username": bot.username,
                    "next": bot.next_update_id,
                    "base": bot.base_id,
                }
            )
            + b"\n"
        )
        for chat in bot.chats.values():
            yield json_bytes({"t": "chat", "b": bot.id, "c": chat.to_record()}) + b"\n"
        if bot.allowed_updates is not None:
            yield json_bytes({"t": "allow", "b": bot.id, "a": bot.allowed_updates}) + b"\n"
        if bot.webhook is not None:
            yield json_bytes({"t": "wh", "b": bot.id, "w": bot.webhook}) + b"\n"
        for index, data in enumerate(bot.history):
            quoted = _quote_type(bot.history_types[index])
            yield b"u %d %d %s %s\n" % (bot.id, bot.base_id + index, quoted, data)
        yield (
            json_bytes(
                {"t": "off", "b": bot.id, "c": bot.confirmed_offset, "p": bot.first_pending_id()}
            )
            + b"\n"
        )
    for kind, record in received.snapshot_records(emu):
        yield json_bytes({"t": kind, **record}) + b"\n"
