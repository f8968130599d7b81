"""Files: input files (upload, local path, URL, file_id) and media fields (getFile: received)."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from botapi_emulator.constants import UPLOAD_LIMIT_LOCAL
from botapi_emulator.errors import ApiError
from botapi_emulator.params import p_int, p_str
from botapi_emulator.protocol import Params
from botapi_emulator.uploads import FileInfo, Upload

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{20,}")
# the file kinds a message can carry -> the method that sends one
MEDIA_METHODS = {
    "photo": "sendPhoto",
    "document": "sendDocument",
    "audio": "sendAudio",
    "video": "sendVideo",
    "voice": "sendVoice",
    "animation": "sendAnimation",
    "video_note": "sendVideoNote",
    "sticker": "sendSticker",
}
MEDIA_KINDS = tuple(MEDIA_METHODS)
CAPTIONED_KINDS = ("photo", "document", "audio", "video", "voice", "animation")
FILE_ID_PREFIX = {
    "photo": "AgAC",
    "document": "BQAC",
    "audio": "CQAC",
    "video": "BAAC",
    "voice": "AwAC",
    "animation": "CgAC",
    "video_note": "DQAC",
    "sticker": "CAAC",
}
DEFAULT_MIME = {
    "audio": "audio/mpeg",
    "video": "video/mp4",
    "voice": "audio/ogg",
    "animation": "video/mp4",
    "video_note": "video/mp4",
}


# ------------------------------------------------------------------ files -------
def new_file(
    emu: Emulator,
    kind: str,
    seed: str,
    size: int,
    name: str | None,
    mime: str | None,
    path: str | None,
) -> FileInfo:
    digest = hashlib.sha256(seed.encode("utf-8", "replace")).digest()
    unique = "AQAD" + base64.urlsafe_b64encode(digest[:9]).decode().rstrip("=")
    file_id = FILE_ID_PREFIX.get(kind, "BQAC") + base64.urlsafe_b64encode(
        os.urandom(45)
    ).decode().rstrip("=")
    info = FileInfo(file_id, unique, size, name, mime, path)
    emu.files[file_id] = info
    return info


def input_file(emu: Emulator, params: Params, kind: str, source: Any) -> FileInfo:
    if isinstance(source, str) and source.startswith("attach://"):
        source = params.get(source[len("attach://") :])
        if not isinstance(source, Upload):
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
    if isinstance(source, Upload):
        return file_from_upload(emu, kind, source)
    if not isinstance(source, str):
        raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
    value = source.strip()
    if emu.opts.local and (value.startswith("/") or value.lower().startswith("file://")):
        return file_from_path(emu, kind, value)
    if re.match(r"(?i)https?://[^/\s]+", value):
        name = os.path.basename(urllib.parse.urlsplit(value).path) or None
        size = 1024 + int.from_bytes(hashlib.sha256(value.encode()).digest()[:3], "big")
        mime = mimetypes.guess_type(name or "")[0] or DEFAULT_MIME.get(kind)
        return new_file(emu, kind, "url:" + value, size, name, mime, None)
    if FILE_ID_RE.fullmatch(value):
        known = emu.files.get(value)
        if known is not None:
            return known
        return FileInfo(value, "AQAD" + value[-12:], 10240, None, DEFAULT_MIME.get(kind))
    raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")


def file_from_upload(emu: Emulator, kind: str, upload: Upload) -> FileInfo:
    if upload.size == 0:
        raise ApiError(400, "Bad Request: file must be non-empty")
    mime = (
        upload.content_type
        if upload.content_type != "application/octet-stream"
        else mimetypes.guess_type(upload.filename)[0] or DEFAULT_MIME.get(kind)
    )
    info = new_file(
        emu, kind, "sha256:" + upload.sha256, upload.size, upload.filename, mime, upload.path
    )
    extension = os.path.splitext(upload.filename)[1][:10] or ".bin"
    emu.downloads[f"{kind}s/file_{emu.file_seq}{extension}"] = info
    return info


def file_from_path(emu: Emulator, kind: str, value: str) -> FileInfo:
    path = value
    if value.lower().startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(value).path)
    if not os.path.isabs(path) or not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ApiError(400, "Bad Request: file not found")
    stat = os.stat(path)
    if stat.st_size == 0:
        raise ApiError(400, "Bad Request: file must be non-empty")
    if stat.st_size > UPLOAD_LIMIT_LOCAL:
        raise ApiError(400, "Bad Request: file is too big")
    name = os.path.basename(path)
    mime = mimetypes.guess_type(name)[0] or DEFAULT_MIME.get(kind)
    seed = f"path:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return new_file(emu, kind, seed, stat.st_size, name, mime, path)


def media_fields(emu: Emulator, kind: str, info: FileInfo, params: Params) -> dict[str, Any]:
    base = {
        "file_id": info.file_id,
        "file_unique_id": info.file_unique_id,
        "file_size": info.size,
    }
    if kind == "photo":
        return {"photo": photo_sizes(emu, info)}
    if kind == "video_note":
        length = p_int(params, "length", 240)
        return {"video_note": {"length": length, "duration": p_int(params, "duration", 0), **base}}
    if kind == "sticker":
        sticker = {
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": (info.name or "").lower().endswith(".tgs"),
            "is_video": (info.name or "").lower().endswith(".webm"),
        }
        if p_str(params, "emoji"):
            sticker["emoji"] = p_str(params, "emoji")
        return {"sticker": {**sticker, **base}}
    described: dict[str, Any] = {}
    if kind in ("audio", "video", "voice", "animation"):
        described["duration"] = p_int(params, "duration", 0)
    if kind in ("video", "animation"):
        described["width"] = p_int(params, "width", 640)
        described["height"] = p_int(params, "height", 360)
    if kind == "audio":
        for key in ("performer", "title"):
            if p_str(params, key):
                described[key] = p_str(params, key)
    if info.name and kind != "voice":
        described["file_name"] = info.name
    if info.mime_type:
        described["mime_type"] = info.mime_type
    described.update(base)
    fields = {kind: described}
    if kind == "animation":
        document = {k: v for k, v in described.items() if k not in ("duration", "width", "height")}
        fields["document"] = document
    return fields


def photo_sizes(emu: Emulator, info: FileInfo) -> list[dict[str, Any]]:
    sizes = []
    for width, share in ((90, 0.02), (320, 0.2)):
        size = max(1, int(info.size * share))
        small = new_file(
            emu, "photo", f"{info.file_unique_id}:{width}", size, None, "image/jpeg", None
        )
        sizes.append(
            {
                "file_id": small.file_id,
                "file_unique_id": small.file_unique_id,
                "file_size": small.size,
                "width": width,
                "height": width * 3 // 4,
            }
        )
    sizes.append(
        {
            "file_id": info.file_id,
            "file_unique_id": info.file_unique_id,
            "file_size": info.size,
            "width": 800,
            "height": 600,
        }
    )
    return sizes
