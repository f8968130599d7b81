"""Received files: media a user sends (injected), and their download by ``getFile``.

The real server keeps what ``getFile`` downloads in its per-bot directory, ``<dir>/<bot
id>:<secret>/`` (telegram-bot-api ``Client.cpp``: ``dir_ = working_directory + token``, with
``:`` replaced by ``~`` only where the file system refuses a colon in a directory name,
which ``telegram-bot-api.cpp`` probes at start-up with ``mkdtemp(dir, "1:a")``; tdlib's
``files_directory`` defaults to that ``database_directory``). tdlib writes the bytes to
``temp/<tmp_file_id>`` and renames them to ``<kind folder>/file_<perm_file_id>.<ext>``
(``FileLoaderUtils.cpp``: ``open_temp_file``, ``create_from_temp``; the Bot API sets the
option ``ignore_file_names``, so the stem is never the sender's file name). Both counters
are per bot (tdlib's binlog ``pmc``), shared by all folders. Files are opened
``O_CREAT|O_EXCL`` with mode 0640 and folders made with 0750, both under the process umask
(``try_create_new_file``). ``getFile`` answers the absolute path in ``--local`` mode and the
path relative to the bot's directory otherwise (``Client::json_store_file``).

The sent bytes ("Telegram's copy") are kept in ``<dir>/botapi-emulator.files/``; a file's
metadata and download are journal records, so they survive a restart like the update that
carries them.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState, chat_type_by_id
from botapi_emulator.errors import ApiError, ControlError
from botapi_emulator.files import new_file
from botapi_emulator.params import p_str
from botapi_emulator.protocol import Handled, Params, Response, error_response, ok_response
from botapi_emulator.uploads import FileInfo

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

STORE_NAME = "botapi-emulator.files"
# tdlib td/telegram/files/FileType.cpp, get_file_type_name()
KIND_FOLDERS = {
    "photo": "photos",
    "voice": "voice",
    "document": "documents",
    "video": "videos",
    "audio": "music",
}
RECEIVED_KINDS = tuple(KIND_FOLDERS)
# the extension of the name tdlib suggests when the file has none: DocumentsManager.cpp
# (default_extension per document type; photos are named "<id>.jpg" in Photo.cpp)
DEFAULT_EXTENSION = {"photo": "jpg", "voice": "oga", "audio": "mp3", "video": "mp4"}
# MimeType::to_extension (tdutils/generate/mime_types.txt: the first extension, or the
# preferred one of generate_mime_types_gperf.cpp) for the types tests use
MIME_EXTENSIONS = {
    "application/pdf": "pdf",
    "application/zip": "zip",
    "audio/mpeg": "mp3",
    "audio/ogg": "oga",
    "audio/mp4": "m4a",
    "image/jpeg": "jpg",
    "image/png": "png",
    "text/plain": "txt",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
DEFAULT_MIME = {"voice": "audio/ogg", "audio": "audio/mpeg", "video": "video/mp4"}
FILE_MODE = 0o640  # FileFd::open(..., 0640) in try_create_new_file
DIR_MODE = 0o750  # mkdir(path, 0750) in try_create_new_file, mkpath(dir, 0750) in TdDb
MAX_DOWNLOAD_FILE_SIZE = 20 << 20  # Client.h: getFile limit without --local
SENDER_ID = 777000001  # the user who sends media into groups


def get_file(emu: Emulator, bot: BotState, params: Params) -> Handled:
    """``getFile``: a received file is downloaded into the bot's directory (tdlib's layout);
    an uploaded one answers its upload's path (local) or its download path."""
    file_id = (p_str(params, "file_id") or "").strip()
    if not file_id:
        raise ApiError(400, "Bad Request: file_id not specified")
    info = emu.files.get(file_id)
    if info is None:
        raise ApiError(400, "Bad Request: invalid file_id")
    result: dict[str, Any] = {
        "file_id": info.file_id,
        "file_unique_id": info.file_unique_id,
        "file_size": info.size,
    }
    if info.blob:
        path = download(emu, bot, info)
        result["file_path"] = path if emu.opts.local else relative_path(emu, bot, path)
    elif info.path and emu.opts.local:
        result["file_path"] = info.path
    else:
        for rel, known in emu.downloads.items():
            if known is info:
                result["file_path"] = rel
                break
    return ok_response(result)


def serve_download(emu: Emulator, path: str) -> Response:
    """``/file/bot<token>/<file_path>``: non-local mode serves uploads and received files
    (the real server's download route for its relative ``file_path``)."""
    token, _, rel = path[len("/file/bot") :].partition("/")
    try:
        bot = emu.authorize(token)
    except ApiError as exc:
        return error_response(exc.code, exc.description)
    info = emu.downloads_by_bot.get((bot.id, rel)) or emu.downloads.get(rel)
    if emu.opts.local or info is None or not info.path:
        return error_response(404, "Not Found")
    try:
        with open(info.path, "rb") as handle:
            data = handle.read()
    except OSError:
        return error_response(404, "Not Found")
    return Response(200, data, content_type=info.mime_type or "application/octet-stream")


def inject_file(emu: Emulator, bot: BotState, spec: dict[str, Any]) -> dict[str, Any]:
    """Make an update carrying ``spec["kind"]`` with ``spec["data"]`` (base64) and inject it."""
    kind = spec.get("kind")
    if kind not in KIND_FOLDERS:
        raise ControlError(f"kind must be one of {list(RECEIVED_KINDS)}")
    try:
        data = base64.b64decode(str(spec.get("data") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise ControlError("data must be the file's bytes in base64") from None
    if not data:
        raise ControlError("data must not be empty (Telegram has no empty files)")
    chat_id = spec.get("chat_id")
    if not isinstance(chat_id, int) or isinstance(chat_id, bool):
        raise ControlError("chat_id (integer) is required")
    name = _optional_str(spec, "file_name")
    mime = _optional_str(spec, "mime_type")
    if kind in ("document", "video", "audio") and mime is None and name:
        mime = mimetypes.guess_type(name)[0]
    mime = mime or DEFAULT_MIME.get(kind)
    if kind in ("photo", "voice"):
        name = None  # Telegram keeps no file name for these
    if kind == "photo":
        mime = None

    info = new_file(emu, kind, "received:" + os.urandom(16).hex(), len(data), name, mime, None)
    info.kind, info.bot_id = kind, bot.id
    info.blob = _store_bytes(emu, info.file_unique_id, data)
    record_file(emu, info)
    media = media_object(kind, info, spec)
    chat = bot.chats.get(chat_id) or ChatState(chat_id, chat_type_by_id(chat_id))
    message: dict[str, Any] = {"message_id": chat.last_message_id + 1}
    if chat.type == "private":
        first_name = chat.to_chat()["first_name"]
        message["from"] = {"id": chat.id, "is_bot": False, "first_name": first_name}
    elif chat.type == "channel":
        message["sender_chat"] = chat.to_chat()
    else:
        message["from"] = {"id": SENDER_ID, "is_bot": False, "first_name": "Tester"}
    message["chat"] = chat.to_chat()
    message["date"] = int(time.time())
    message[kind] = media
    caption = _optional_str(spec, "caption")
    if caption:
        message["caption"] = caption
    update_key = "channel_post" if chat.type == "channel" else "message"
    injected = emu.inject(bot, [{update_key: message}])
    return {
        "update_id": injected["first_update_id"],
        "message_id": message["message_id"],
        "file_id": info.file_id,
        "file_unique_id": info.file_unique_id,
        "file_size": info.size,
        "message": message,
    }


def media_object(kind: str, info: FileInfo, spec: dict[str, Any]) -> Any:
    """The media field of a Message, shaped as the Bot API defines it."""
    ids = {"file_id": info.file_id, "file_unique_id": info.file_unique_id}
    if kind == "photo":
        # one PhotoSize: the emulator cannot scale images, and every size must be a real file
        width, height = _int(spec, "width", 800), _int(spec, "height", 600)
        return [{**ids, "width": width, "height": height, "file_size": info.size}]
    media: dict[str, Any] = dict(ids)
    if kind == "video":
        media["width"], media["height"] = _int(spec, "width", 640), _int(spec, "height", 360)
    if kind in ("voice", "video", "audio"):
        media["duration"] = _int(spec, "duration", 1)
    if kind == "audio":
        for key in ("performer", "title"):
            if _optional_str(spec, key):
                media[key] = spec[key]
    if info.name:
        media["file_name"] = info.name
    if info.mime_type:
        media["mime_type"] = info.mime_type
    media["file_size"] = info.size
    return media


def download(emu: Emulator, bot: BotState, info: FileInfo) -> str:
    """The absolute path of the bot's copy of ``info``, downloaded now unless it still is."""
    if info.bot_id != bot.id or not info.blob or not info.kind:
        raise ApiError(400, "Bad Request: invalid file_id")
    if not emu.opts.local and info.size > MAX_DOWNLOAD_FILE_SIZE:
        raise ApiError(400, "Bad Request: file is too big")
    if info.path and os.path.isfile(info.path):
        return info.path
    try:
        with open(info.blob, "rb") as handle:
            data = handle.read()
    except OSError:
        raise ApiError(400, "Bad Request: invalid file_id") from None
    bot_dir = bot_directory(emu, bot)
    os.makedirs(bot_dir, mode=DIR_MODE, exist_ok=True)  # TdDb: mkpath(dir, 0750)
    tmp_id = emu.tmp_file_ids.get(bot.id, 0)
    emu.tmp_file_ids[bot.id] = tmp_id + 1
    temp_path = _create_new(os.path.join(bot_dir, "temp"), str(tmp_id), data)
    perm_id = emu.perm_file_ids.get(bot.id, 0)
    emu.perm_file_ids[bot.id] = perm_id + 1
    extension = file_extension(info)
    name = f"file_{perm_id}" + (f".{extension}" if extension else "")
    folder = os.path.join(bot_dir, KIND_FOLDERS[info.kind])
    perm_path = _create_new(folder, name, b"")
    os.rename(temp_path, perm_path)
    info.path = perm_path
    emu.downloads_by_bot[(bot.id, relative_path(emu, bot, perm_path))] = info
    if emu.journal:
        emu.journal.record(
            "rdl",
            b=bot.id,
            f=info.file_id,
            p=perm_path,
            n=emu.perm_file_ids[bot.id],
            tmp=emu.tmp_file_ids[bot.id],
        )
    return perm_path


def bot_directory(emu: Emulator, bot: BotState) -> str:
    """``<dir>/<token>``, ``:`` replaced by ``~`` where the file system refuses it."""
    name = bot.token if emu.allow_colon_in_filenames else bot.token.replace(":", "~")
    return os.path.join(emu.workdir, name)


def colon_allowed(workdir: str) -> bool:
    """The real server's start-up probe: can a directory name in ``workdir`` hold a ``:``?"""
    try:
        probe = tempfile.mkdtemp(prefix="1:a", dir=workdir)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def relative_path(emu: Emulator, bot: BotState, path: str) -> str:
    return os.path.relpath(path, bot_directory(emu, bot))


def file_extension(info: FileInfo) -> str:
    """The extension tdlib keeps: the file name's, else the MIME type's, else the kind's."""
    if info.name and "." in info.name.strip("."):
        return info.name.rsplit(".", 1)[1]
    if info.mime_type in MIME_EXTENSIONS:
        return MIME_EXTENSIONS[info.mime_type]
    return DEFAULT_EXTENSION.get(info.kind or "", "")


def record_file(emu: Emulator, info: FileInfo) -> None:
    if emu.journal:
        emu.journal.record("rfile", **file_record(info))


def file_record(info: FileInfo) -> dict[str, Any]:
    return {
        "b": info.bot_id,
        "f": info.file_id,
        "u": info.file_unique_id,
        "k": info.kind,
        "s": info.size,
        "n": info.name,
        "m": info.mime_type,
        "blob": info.blob,
    }


def restore_file(emu: Emulator, record: dict[str, Any]) -> None:
    info = FileInfo(
        record["f"], record["u"], record["s"], record["n"], record["m"], None, record["k"]
    )
    info.bot_id, info.blob = record["b"], record["blob"]
    emu.files[info.file_id] = info


def restore_download(emu: Emulator, bot: BotState, record: dict[str, Any]) -> None:
    emu.perm_file_ids[bot.id] = max(emu.perm_file_ids.get(bot.id, 0), record["n"])
    emu.tmp_file_ids[bot.id] = max(emu.tmp_file_ids.get(bot.id, 0), record["tmp"])
    info = emu.files.get(record["f"])
    if info is not None:
        info.path = record["p"]
        emu.downloads_by_bot[(bot.id, relative_path(emu, bot, record["p"]))] = info


def snapshot_records(emu: Emulator) -> list[tuple[str, dict[str, Any]]]:
    """The journal records that restore every received file and download."""
    records: list[tuple[str, dict[str, Any]]] = []
    for info in emu.files.values():
        if info.blob and info.bot_id in emu.bots:
            records.append(("rfile", file_record(info)))
            if info.path:
                bot_id = info.bot_id
                records.append(
                    (
                        "rdl",
                        {
                            "b": bot_id,
                            "f": info.file_id,
                            "p": info.path,
                            "n": emu.perm_file_ids.get(bot_id, 0),
                            "tmp": emu.tmp_file_ids.get(bot_id, 0),
                        },
                    )
                )
    return records


# ------------------------------------------------------------------ helpers -------
def _create_new(folder: str, name: str, data: bytes) -> str:
    """tdlib's ``try_create_new_file``: O_CREAT|O_EXCL 0640; on failure mkdir 0750, retry."""
    path = os.path.join(folder, name)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, FILE_MODE)
    except FileNotFoundError:
        os.mkdir(folder, DIR_MODE)
        fd = os.open(path, flags, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def _store_bytes(emu: Emulator, unique_id: str, data: bytes) -> str:
    store = os.path.join(emu.workdir, STORE_NAME)
    os.makedirs(store, mode=0o700, exist_ok=True)
    path = os.path.join(store, unique_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def _optional_str(spec: dict[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ControlError(f"{key} must be a string")
    return value or None


def _int(spec: dict[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ControlError(f"{key} must be a non-negative integer")
    return value
