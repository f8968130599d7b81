"""InputMedia objects (sendMediaGroup's ``media`` items, editMessageMedia's ``media``): parsed
and checked as telegram-bot-api does (``Client::get_input_media``), turned into message
fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botapi_emulator.constants import MAX_CAPTION_LENGTH
from botapi_emulator.errors import ApiError
from botapi_emulator.files import input_file, media_fields
from botapi_emulator.formatting import auto_entities
from botapi_emulator.messages import formatted
from botapi_emulator.params import p_bool
from botapi_emulator.protocol import Params

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

INPUT_MEDIA_TYPES = ("photo", "video", "animation", "audio", "document")
ALBUM_TYPES = ("photo", "video", "audio", "document")
MAX_ALBUM_SIZE = 10


def _invalid(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: can't parse InputMedia: {reason}")


def media_message_fields(
    emu: Emulator, params: Params, item: Any, types: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """(media type, message fields) of one InputMedia; ``params`` holds ``attach://`` files."""
    if not isinstance(item, dict):
        raise _invalid("expected an Object")
    kind = item.get("type")
    if not isinstance(kind, str):
        raise _invalid('Field "type" must be of type String')
    if kind not in INPUT_MEDIA_TYPES:
        raise _invalid(f'type "{kind}" is unsupported')
    if kind not in types:
        raise _invalid(f'type "{kind}" can\'t be used in sendMediaGroup')
    source = item.get("media")
    if not isinstance(source, str) or not source.strip():
        raise _invalid("media not found")
    caption, caption_entities = formatted(item, "caption", "caption_entities", None)
    if len(caption) > MAX_CAPTION_LENGTH:
        raise ApiError(400, "Bad Request: message caption is too long")
    info = input_file(emu, params, kind, source.strip())
    fields = media_fields(emu, kind, info, item)
    if caption:
        fields["caption"] = caption
        entities = auto_entities(caption, caption_entities)
        if entities:
            fields["caption_entities"] = entities
    if p_bool(item, "show_caption_above_media"):
        fields["show_caption_above_media"] = True
    if p_bool(item, "has_spoiler") and kind in ("photo", "video", "animation"):
        fields["has_media_spoiler"] = True
    return kind, fields


def album_items(emu: Emulator, params: Params, items: Any) -> list[dict[str, Any]]:
    """The message fields of every item of an album, checked as TDLib checks an album."""
    if not isinstance(items, list):
        raise ApiError(400, "Bad Request: expected an Array of InputMedia")
    parsed = [media_message_fields(emu, params, item, ALBUM_TYPES) for item in items]
    if len(parsed) > MAX_ALBUM_SIZE:
        raise ApiError(400, "Bad Request: too many messages to send as an album")
    if not parsed:
        raise ApiError(400, "Bad Request: there are no messages to send")
    kinds = {kind for kind, _ in parsed}
    for kind in ("audio", "document"):
        if kind in kinds and len(kinds) > 1:
            raise ApiError(400, f"Bad Request: {kind} can't be mixed with other media types")
    return [fields for _, fields in parsed]
