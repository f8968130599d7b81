"""Local files sent as media: only from the directories of ``GATEWAY_MEDIA_DIRS``.

The local Bot API server (``--local``) reads a ``file:/…`` value of any media parameter from
its own filesystem, as its own user. Without a check, ``/send`` and ``telegram.out.<bot>.send*``
would send any file that user can read (``/etc/passwd``, the server's per-bot state). Here a
value that names a local file is allowed only when its real path -- symlinks and ``..``
resolved, as the kernel resolves them -- lies strictly inside one of the configured
directories and is a regular file (or does not exist: the Bot API then answers ``file not
found``); anything else is :class:`InvalidRequest` (HTTP 400, or a
400 envelope on NATS) naming ``GATEWAY_MEDIA_DIRS`` and the field, before anything is sent.

What counts as a local file, read the way the real server reads it (``Client.cpp``:
``get_input_file`` and ``get_local_file_path``, Bot API 10.0), widened where the emulator or a
future server might be more lenient:

* ``file:`` in any letter case (the real server only knows ``file:/``): what follows
  ``file:/`` loses ``/localhost`` or one ``/``, then is percent-decoded. So ``file:///a``,
  ``file://localhost/a`` and ``file://localhost%2Fa`` all mean ``/a``; a value that leaves a
  relative path (``file:a``, ``file:/a`` -- relative to the server's working directory --,
  ``file://host/a``) is refused;
* an absolute path (``/srv/outbox/a.pdf``), which ``/send`` sends on as a ``file://`` URI and
  the emulator reads directly; it is taken literally (no percent-decoding);
* leading whitespace is ignored for the decision (the emulator strips it).

Anything else (a ``file_id``, an ``http(s)://`` URL, ``attach://…``, a relative name) is no
local file and passes unchanged: Telegram treats it as a file_id or URL.

Which parameters: every InputFile-typed one of the methods the gateway allows, top-level
(:data:`FILE_FIELDS`) and inside the JSON objects the server parses (``media`` of
``sendMediaGroup``/``editMessageMedia``/``sendPoll``, ``options`` and ``explanation_media`` of
``sendPoll``, paid media): there the keys ``media``, ``thumbnail``/``thumb``, ``cover``,
``photo`` and the other media names are checked at any depth, whether the object came as JSON
or as a JSON string (the real server decodes the string).

The check runs in the gateway's process, so the gateway must be able to look up the path
(search permission on the directories); the file itself is read by the Bot API server's user.
Between the check and the server's read someone who can write to a media directory could swap
a checked file for a symlink: the Bot API server's unit therefore also cannot see the
gateway's other state, the env files or nats-server's files (systemd/telegram-bot-api.service.j2).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from telegram_gateway.errors import InvalidRequest

SETTING = "GATEWAY_MEDIA_DIRS"

#: names whose string value is an InputFile, top-level or inside an InputMedia-like object
FILE_FIELDS = frozenset(
    {
        "photo",
        "document",
        "audio",
        "video",
        "voice",
        "animation",
        "video_note",
        "sticker",
        "live_photo",
        "thumbnail",
        "thumb",
        "cover",
        "media",
        "png_sticker",
        "tgs_sticker",
        "webm_sticker",
    }
)
#: top-level parameters the real server decodes as JSON when they come as a string
JSON_PARAMS = frozenset({"media", "options", "explanation_media", "paid_media", "extended_media"})


def local_path(value: str) -> str | None:
    """The path the Bot API server (or the emulator) would read for ``value``, or None when the
    value names no local file. A relative result means the server would read relative to its
    working directory; :func:`check_value` refuses it."""
    text = value.lstrip()
    if text.startswith("/"):
        return text
    if text[:5].lower() != "file:":
        return None
    rest = text[5:]
    if not rest.startswith("/"):
        return rest  # "file:a": relative
    rest = rest[1:]  # after "file:/", as the real server cuts it
    if rest.startswith("/localhost"):
        rest = rest[len("/localhost") :]
    elif rest.startswith("/"):
        rest = rest[1:]
    else:
        return rest  # "file:/a": relative to the server's working directory
    return os.fsdecode(unquote_to_bytes(rest))


def check_value(field: str, value: str, dirs: Iterable[Path]) -> str | None:
    """Refuse ``value`` if it names a local file outside ``dirs``; the file's real path if it
    names one inside, None if it names no local file."""
    path = local_path(value)
    if path is None:
        return None
    allowed = tuple(dirs)
    where = ":".join(str(d) for d in allowed) or "none configured"
    if "\x00" in path:
        raise InvalidRequest(field, f"a local path with a NUL character is refused ({SETTING})")
    if not path.startswith("/"):
        raise InvalidRequest(
            field,
            f"a local file must be an absolute path or a file:/// URI inside {SETTING} ({where})",
        )
    absolute = "/" + path.lstrip("/")
    missing = False
    try:
        real = os.path.realpath(absolute, strict=True)
    except FileNotFoundError:
        # as far as it exists, resolved (a dangling symlink too); the same answer for a
        # missing file as for an existing one outside: no way to probe what exists
        real, missing = os.path.realpath(absolute), True
    except (OSError, ValueError):
        real = None  # a directory the gateway may not search, a symlink loop, ...
    if real is None or not any(_inside(real, directory) for directory in allowed):
        if real is None and any(_inside(os.path.realpath(absolute), d) for d in allowed):
            raise InvalidRequest(
                field, f"the gateway cannot look this path up inside {SETTING} ({where})"
            )
        raise InvalidRequest(
            field, f"local file outside {SETTING}: local files are sent only from {where}"
        )
    if missing:
        return real  # inside: the Bot API answers "file not found", as for any missing file
    if not stat.S_ISREG(os.stat(real).st_mode):
        raise InvalidRequest(field, f"not a regular file (inside {SETTING})")
    return real


def check_params(params: Mapping[str, Any], dirs: Iterable[Path]) -> None:
    """Check every InputFile of a Bot API call's parameters (see the module docstring)."""
    allowed = tuple(dirs)
    for name, value in params.items():
        key = str(name)
        if isinstance(value, str):
            if key in JSON_PARAMS and value.lstrip()[:1] in ("{", "["):
                try:
                    decoded = json.loads(value)
                except (ValueError, RecursionError):
                    decoded = None  # the Bot API refuses it as malformed JSON
                if decoded is not None:
                    _walk(key, decoded, allowed)
                    continue
            if key in FILE_FIELDS:
                check_value(key, value, allowed)
        else:
            _walk(key, value, allowed)


def _walk(where: str, value: Any, dirs: tuple[Path, ...]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}"
            if isinstance(item, str):
                if key in FILE_FIELDS:
                    check_value(path, item, dirs)
            else:
                _walk(path, item, dirs)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(f"{where}[{index}]", item, dirs)


def _inside(real: str, directory: Path) -> bool:
    base = os.path.realpath(directory).rstrip("/")
    return real.startswith(base + "/")
