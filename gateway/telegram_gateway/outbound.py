"""What ``POST /send`` accepts, checked before anything is sent, and how long text is split.

A body is Bot API parameters plus ``bot``: ``chat_id`` and either ``text`` or exactly one media
field (``photo``, ``document``, ``audio``, ``video``, ``voice``, ``animation``). Every field is
known here with its type and the kind of message it belongs to; anything else is refused, and
every problem is reported as ``"<field>: <reason>"`` (:class:`InvalidRequest`, HTTP 400).
:func:`plan` turns a valid body into a :class:`SendPlan`: the Bot API method and the
parameters of each message to send, in order.

Long text (Telegram's limit is 4096 characters per message) is split by :func:`split_text`
only when it is plain text: with ``parse_mode`` or ``entities`` the offsets and markup would
not survive a cut, so such a text goes as one message and Telegram decides (it answers 400
``Bad Request: message is too long`` when the text is too long after parsing). The parts keep
the message's options; ``reply_to_message_id``/``reply_parameters`` go with the first part,
``reply_markup`` with the last (the buttons end up under the whole text).

Media values: a ``file_id``, an ``http(s)://`` URL (Telegram downloads it), an absolute local
path (sent as a ``file://`` URI, which the local Bot API server in ``--local`` mode reads
directly, up to 2000 MB), or a file uploaded with ``multipart/form-data`` (:class:`Upload`).
A local path or ``file:`` URI is accepted only inside ``GATEWAY_MEDIA_DIRS``
(:mod:`telegram_gateway.media`); :func:`check_local_files` applies the same rule to the
parameters of a NATS ``telegram.out.<bot>.<method>`` call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from telegram_gateway.config import BotConfig, Settings
from telegram_gateway.errors import InvalidRequest
from telegram_gateway.media import check_params, check_value

TEXT_LIMIT = 4096  # characters of one Telegram text message
CAPTION_LIMIT = 1024  # characters of a media caption
MAX_PARTS = 16  # a /send text is at most this many messages
MAX_TEXT = MAX_PARTS * TEXT_LIMIT
MAX_ID = 2**53  # Telegram's identifiers fit in 52 bits (plus sign)
MAX_STRING = 65536  # any other string field
MEDIA_METHODS = {
    "photo": "sendPhoto",
    "document": "sendDocument",
    "audio": "sendAudio",
    "video": "sendVideo",
    "voice": "sendVoice",
    "animation": "sendAnimation",
}
PARSE_MODES = ("HTML", "Markdown", "MarkdownV2")  # spelled as Telegram documents them
USERNAME_RE = re.compile(r"^@[A-Za-z0-9_]{1,64}$")
FILE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
CHAT_ID_RE = re.compile(r"^-?[0-9]{1,16}$")


@dataclass(frozen=True)
class Field:
    kind: str  # "str", "int", "bool", "object", "array", "media", "chat", "bot"
    where: str  # "any", "text" (text messages only), "media" (media messages only), or a media


#: every field ``/send`` accepts; the OpenAPI document is built from the same table
FIELDS: dict[str, Field] = {
    "bot": Field("bot", "any"),
    "chat_id": Field("chat", "any"),
    "text": Field("str", "text"),
    **{name: Field("media", "media") for name in MEDIA_METHODS},
    "parse_mode": Field("str", "any"),
    "entities": Field("array", "text"),
    "link_preview_options": Field("object", "text"),
    "caption": Field("str", "media"),
    "caption_entities": Field("array", "media"),
    "show_caption_above_media": Field("bool", "media"),
    "has_spoiler": Field("bool", "media"),
    "duration": Field("int", "media"),
    "width": Field("int", "media"),
    "height": Field("int", "media"),
    "performer": Field("str", "audio"),
    "title": Field("str", "audio"),
    "supports_streaming": Field("bool", "video"),
    "disable_content_type_detection": Field("bool", "document"),
    "message_thread_id": Field("int", "any"),
    "reply_to_message_id": Field("int", "any"),
    "reply_parameters": Field("object", "any"),
    "reply_markup": Field("object", "any"),
    "disable_notification": Field("bool", "any"),
    "protect_content": Field("bool", "any"),
    "message_effect_id": Field("str", "any"),
}
FIRST_PART_ONLY = ("reply_to_message_id", "reply_parameters")
LAST_PART_ONLY = ("reply_markup",)
REPLY_MARKUP_KINDS = ("inline_keyboard", "keyboard", "remove_keyboard", "force_reply")


@dataclass
class Upload:
    """A file that came with a ``multipart/form-data`` request, forwarded as an upload."""

    field: str
    filename: str
    stream: IO[bytes]
    content_type: str = "application/octet-stream"
    size: int = 0
    digest: str = ""  # sha256 of the content (the idempotency fingerprint includes it)


@dataclass
class SendPlan:
    """What one ``/send`` request sends: ``method`` once per entry of ``parts``."""

    bot: BotConfig
    method: str
    chat_id: int | str
    parts: list[dict[str, Any]]
    upload: Upload | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the validated body, for fingerprints

    def fingerprint_source(self) -> dict[str, Any]:
        return {
            "bot": self.bot.bot_id,
            "method": self.method,
            "parts": self.parts,
            "upload": [self.upload.field, self.upload.digest] if self.upload else None,
        }


def plan(body: Any, settings: Settings, upload: Upload | None = None) -> SendPlan:
    """Check a ``/send`` body (a parsed JSON object, or form fields already converted by
    :func:`from_form`) and plan the messages. Raises :class:`InvalidRequest`."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    check_encodable(body)
    for name in body:
        if name not in FIELDS:
            raise InvalidRequest(str(name)[:64], "unknown field")
    values: dict[str, Any] = {}
    for name, value in body.items():
        if value is None:
            continue  # JSON null: as if left out
        values[name] = _check(name, FIELDS[name], value, settings.media_dirs)
    if upload is not None:
        if upload.field in values:
            raise InvalidRequest(upload.field, "given both as a field and as an uploaded file")
        values[upload.field] = upload

    bot = _bot(body.get("bot"), settings)
    if "chat_id" not in values:
        raise InvalidRequest("chat_id", "required")
    chat_id = values["chat_id"]
    media = [name for name in MEDIA_METHODS if name in values]
    if "text" in values and media:
        raise InvalidRequest("text", f"give either text or a media field, not both ({media[0]})")
    if len(media) > 1:
        raise InvalidRequest(media[1], f"only one media field per message ({media[0]} given)")
    if "text" not in values and not media:
        raise InvalidRequest("text", "required (or one of " + ", ".join(MEDIA_METHODS) + ")")
    kind = media[0] if media else "text"
    for name in values:
        where = FIELDS[name].where
        if where == "text" and kind != "text":
            raise InvalidRequest(name, "only for text messages")
        if where == "media" and kind == "text":
            raise InvalidRequest(name, "only for media messages")
        if where in MEDIA_METHODS and where != kind:
            raise InvalidRequest(name, f"only with {where}")
    _check_reply_markup(values.get("reply_markup"))
    _check_reply_parameters(values.get("reply_parameters"))

    params = {k: v for k, v in values.items() if k != "bot" and not isinstance(v, Upload)}
    if kind == "text":
        parts = _text_parts(params)
        method = "sendMessage"
    else:
        _check_caption(params)
        parts = [params]
        method = MEDIA_METHODS[kind]
    return SendPlan(
        bot=bot,
        method=method,
        chat_id=chat_id,
        parts=parts,
        upload=upload,
        fields=params,
    )


def check_encodable(value: Any, field: str = "body") -> None:
    """JSON that parses but cannot be sent on: a lone UTF-16 surrogate (``"\\ud800"``) is not
    Unicode, NaN and Infinity are not JSON."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(field, "contains a lone UTF-16 surrogate, which is not text") from None
    except ValueError:
        raise InvalidRequest(field, "NaN and Infinity are not JSON numbers") from None


def _bot(ref: Any, settings: Settings) -> BotConfig:
    if isinstance(ref, bool) or (ref is not None and not isinstance(ref, str | int)):
        raise InvalidRequest("bot", "must be a bot id or a configured bot name")
    bot = settings.bot(ref)
    if bot is None:
        if ref is None or ref == "":
            raise InvalidRequest("bot", "required: several bots are configured")
        raise InvalidRequest("bot", f"unknown bot {str(ref)[:64]!r}")
    return bot


def _check(name: str, spec: Field, value: Any, media_dirs: Iterable[Path]) -> Any:
    kind = spec.kind
    if kind == "bot":
        return value
    if kind == "chat":
        return chat_id_of(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(name, "must be an integer")
        if not 0 <= value < MAX_ID:
            raise InvalidRequest(name, "out of range")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidRequest(name, "must be true or false")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise InvalidRequest(name, "must be a JSON object")
        return value
    if kind == "array":
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise InvalidRequest(name, "must be an array of JSON objects")
        return value
    if not isinstance(value, str):
        raise InvalidRequest(name, "must be a string")
    if kind == "media":
        return media_value(name, value, media_dirs)
    if name == "parse_mode":
        if value not in PARSE_MODES:
            raise InvalidRequest(name, "must be HTML, Markdown or MarkdownV2")
        return value
    if name == "text":
        if not value.strip():
            raise InvalidRequest(name, "must not be empty")
        if len(value) > MAX_TEXT:
            raise InvalidRequest(name, f"longer than {MAX_TEXT} characters ({MAX_PARTS} messages)")
        return value
    if len(value) > MAX_STRING:
        raise InvalidRequest(name, "too long")
    return value


def chat_id_of(value: Any, field: str = "chat_id") -> int | str:
    """A chat id as the Bot API takes it: an integer, or ``@username``."""
    if isinstance(value, bool):
        raise InvalidRequest(field, "must be an integer or @username")
    if isinstance(value, str):
        text = value.strip()
        if USERNAME_RE.match(text):
            return text
        if not CHAT_ID_RE.match(text):
            raise InvalidRequest(field, "must be an integer or @username")
        value = int(text)
    if not isinstance(value, int):
        raise InvalidRequest(field, "must be an integer or @username")
    if value == 0 or not -MAX_ID < value < MAX_ID:
        raise InvalidRequest(field, "not a chat id")
    return value


def media_value(name: str, value: str, media_dirs: Iterable[Path]) -> str:
    """A media field as the Bot API takes it: file_id, http(s) URL, or a ``file://`` URI for
    a local file, which must lie inside ``media_dirs`` (``GATEWAY_MEDIA_DIRS``)."""
    if not value:
        raise InvalidRequest(name, "must not be empty")
    if len(value) > 4096 or "\x00" in value:
        raise InvalidRequest(name, "not a file_id, an http(s) URL or an absolute path")
    lowered = value[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return value
    if check_value(name, value, media_dirs) is not None:  # a local file, allowed
        local = value.lstrip()
        return "file://" + quote(local) if local.startswith("/") else local
    if FILE_ID_RE.match(value):
        return value
    raise InvalidRequest(name, "not a file_id, an http(s) URL or an absolute path")


def check_local_files(params: Mapping[str, Any], settings: Settings) -> None:
    """The parameters of a Bot API call (a NATS ``telegram.out.*`` request): every InputFile
    that names a local file must lie inside ``GATEWAY_MEDIA_DIRS``, or :class:`InvalidRequest`
    naming the setting and the field (:mod:`telegram_gateway.media`)."""
    check_params(params, settings.media_dirs)


def _check_caption(params: dict[str, Any]) -> None:
    caption = params.get("caption")
    if caption is None or "parse_mode" in params or "caption_entities" in params:
        return  # with markup, Telegram measures the caption after parsing
    if len(caption) > CAPTION_LIMIT:
        raise InvalidRequest("caption", f"longer than {CAPTION_LIMIT} characters")


def _check_reply_markup(markup: dict[str, Any] | None) -> None:
    if markup is None:
        return
    kinds = [key for key in REPLY_MARKUP_KINDS if key in markup]
    if len(kinds) != 1:
        raise InvalidRequest(
            "reply_markup", "must have exactly one of " + ", ".join(REPLY_MARKUP_KINDS)
        )
    if kinds[0] in ("inline_keyboard", "keyboard"):
        rows = markup[kinds[0]]
        if not isinstance(rows, list) or not all(
            isinstance(row, list) and all(isinstance(b, dict | str) for b in row) for row in rows
        ):
            raise InvalidRequest("reply_markup", f"{kinds[0]} must be an array of button rows")


def _check_reply_parameters(reply: dict[str, Any] | None) -> None:
    if reply is None:
        return
    message_id = reply.get("message_id")
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise InvalidRequest("reply_parameters", "message_id must be an integer")


def _text_parts(params: dict[str, Any]) -> list[dict[str, Any]]:
    text: str = params["text"]
    if len(text) <= TEXT_LIMIT or "parse_mode" in params or "entities" in params:
        return [params]
    pieces = split_text(text, TEXT_LIMIT)
    parts: list[dict[str, Any]] = []
    for index, piece in enumerate(pieces):
        part = dict(params, text=piece)
        if index > 0:
            for name in FIRST_PART_ONLY:
                part.pop(name, None)
        if index < len(pieces) - 1:
            for name in LAST_PART_ONLY:
                part.pop(name, None)
        parts.append(part)
    return parts


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, preferring (in this order)
    a paragraph break (blank line), a line break, a space, and only as a last resort a hard
    cut. Paragraph and line breaks count only in the second half of a piece (no tiny pieces).

    Precisely: ``text == pieces[0] + gap[0] + pieces[1] + ... + pieces[-1]`` (leading and
    trailing whitespace of ``text`` aside) where every ``gap`` is whitespace, non-empty
    except at a hard cut; no piece is empty or starts/ends with whitespace at a cut.

    Lengths are ``len()``, Unicode code points: tdlib measures a bot's text the same way
    (``utf8_length`` of the text after entity parsing), not in UTF-16 code units.
    pyTelegramBotAPI's ``telebot.util.smart_split`` is not used: it cuts at the last line
    break anywhere in the window (a piece of three characters when the only break is near the
    start), keeps the separator at the end of a piece, and can yield a piece of only
    whitespace or an empty last piece, which Telegram refuses (``message text is empty``);
    ``split_string`` is only the hard cut.
    """
    rest = text
    pieces: list[str] = []
    while len(rest) > limit:
        window = rest[: limit + 1]  # a separator right after the limit is a fine cut too
        cut = -1
        for separator, lowest in (("\n\n", limit // 2), ("\n", limit // 2), (" ", 1)):
            found = window.rfind(separator, lowest)
            if found > 0 and rest[:found].rstrip():
                cut = found
                break
        if cut < 0:
            cut = limit
        piece = rest[:cut].rstrip()
        pieces.append(piece)
        rest = rest[cut:].lstrip()
    if rest.strip():
        pieces.append(rest)
    return pieces


# ---- multipart/form-data ------------------------------------------------------------------
def from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """Form fields (all strings) to the JSON types of :data:`FIELDS`: integers and booleans
    parsed, objects and arrays given as JSON text."""
    body: dict[str, Any] = {}
    converters: dict[str, Callable[[str, str], Any]] = {
        "int": _form_int,
        "bool": _form_bool,
        "object": _form_json,
        "array": _form_json,
    }
    for name, raw in form.items():
        spec = FIELDS.get(name)
        if spec is None:
            raise InvalidRequest(name[:64], "unknown field")
        convert = converters.get(spec.kind)
        body[name] = convert(name, raw) if convert else raw
    return body


def _form_int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidRequest(name, "must be an integer") from None


def _form_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidRequest(name, "must be true or false")


def _form_json(name: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest(name, "must be JSON text") from None
