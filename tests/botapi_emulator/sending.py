"""Sending messages: sendMessage, send<Media> (photo, document, audio, video, voice,
animation, video note, sticker), sendMediaGroup, sendChatAction, copyMessage,
forwardMessage."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState
from botapi_emulator.constants import (
    MAX_CAPTION_LENGTH,
    MAX_TEXT_LENGTH,
)
from botapi_emulator.encoding import now_unix
from botapi_emulator.errors import ApiError
from botapi_emulator.files import CAPTIONED_KINDS, MEDIA_METHODS, input_file, media_fields
from botapi_emulator.formatting import auto_entities
from botapi_emulator.input_media import album_items
from botapi_emulator.messages import (
    COPYABLE_FIELDS,
    chat_param,
    check_blocked,
    check_flood,
    common_fields,
    deliver,
    formatted,
    new_message,
    record,
    reply_markup,
)
from botapi_emulator.params import p_bool, p_int, p_json, p_str
from botapi_emulator.protocol import OK_TRUE, Handled, Params, Response, ok_response

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)


def send_message(emu: Emulator, bot: BotState, params: Params) -> Handled:
    text, entities = formatted(params, "text", "entities", "Bad Request: message text is empty")
    markup = reply_markup(params)
    chat = chat_param(emu, bot, params)
    if len(text) > MAX_TEXT_LENGTH:
        raise ApiError(400, "Bad Request: message is too long")
    fields = common_fields(emu, bot, chat, params)
    fields["text"] = text
    entities = auto_entities(text, entities)
    if entities:
        fields["entities"] = entities
    preview = p_json(
        params,
        "link_preview_options",
        "Bad Request: can't parse link preview options JSON object",
    )
    if isinstance(preview, dict) and preview:
        fields["link_preview_options"] = preview
    if p_bool(params, "protect_content"):
        fields["has_protected_content"] = True
    if markup:
        fields["reply_markup"] = markup
    return ok_response(deliver(emu, bot, "sendMessage", params, chat, fields))


def send_media(emu: Emulator, bot: BotState, params: Params, kind: str) -> Handled:
    method = MEDIA_METHODS[kind]
    source = params.get(kind)
    if source is None or source == "":
        raise ApiError(400, f"Bad Request: there is no {kind} in the request")
    caption, caption_entities = "", []
    if kind in CAPTIONED_KINDS:
        caption, caption_entities = formatted(params, "caption", "caption_entities", None)
    markup = reply_markup(params)
    chat = chat_param(emu, bot, params)
    info = input_file(emu, params, kind, source)
    if len(caption) > MAX_CAPTION_LENGTH:
        raise ApiError(400, "Bad Request: message caption is too long")
    fields = common_fields(emu, bot, chat, params)
    fields.update(media_fields(emu, kind, info, params))
    if caption:
        fields["caption"] = caption
        entities = auto_entities(caption, caption_entities)
        if entities:
            fields["caption_entities"] = entities
    if p_bool(params, "show_caption_above_media"):
        fields["show_caption_above_media"] = True
    if p_bool(params, "has_spoiler") and kind in ("photo", "video", "animation"):
        fields["has_media_spoiler"] = True
    if p_bool(params, "protect_content"):
        fields["has_protected_content"] = True
    if markup:
        fields["reply_markup"] = markup
    return ok_response(deliver(emu, bot, method, params, chat, fields))


def send_chat_action(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat = chat_param(emu, bot, params)
    action = (p_str(params, "action") or "").strip()
    if action not in CHAT_ACTIONS:
        raise ApiError(400, "Bad Request: wrong parameter action in request")
    check_blocked(chat)
    record(emu, bot, "sendChatAction", chat.id, params, True)
    return Response(200, OK_TRUE)


def copy_source(
    emu: Emulator, bot: BotState, params: Params, not_found: str
) -> tuple[ChatState, ChatState, int, dict[str, Any]]:
    chat = chat_param(emu, bot, params)
    source_chat = chat_param(emu, bot, params, "from_chat_id")
    message_id = p_int(params, "message_id", 0)
    if message_id <= 0:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    if not source_chat.message_exists(message_id):
        raise ApiError(400, not_found)
    stored = source_chat.messages.get(message_id) or {}
    content = {k: stored[k] for k in COPYABLE_FIELDS if k in stored}
    return chat, source_chat, message_id, content


def copy_message(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat, _, _, content = copy_source(emu, bot, params, "Bad Request: message to copy not found")
    if "caption" in params:
        caption, entities = formatted(params, "caption", "caption_entities", None)
        content.pop("caption_entities", None)
        content["caption"] = caption
        if entities:
            content["caption_entities"] = entities
    markup = reply_markup(params)
    fields = common_fields(emu, bot, chat, params)
    fields.update(content or {"text": ""})
    if markup:
        fields["reply_markup"] = markup
    message = deliver(emu, bot, "copyMessage", params, chat, fields)
    return ok_response({"message_id": message["message_id"]})


def forward_message(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat, source_chat, message_id, content = copy_source(
        emu, bot, params, "Bad Request: message to forward not found"
    )
    stored = source_chat.messages.get(message_id)
    origin: dict[str, Any]
    if source_chat.type == "channel":
        origin = {
            "type": "channel",
            "chat": source_chat.to_chat(),
            "message_id": message_id,
            "date": stored["date"] if stored else now_unix(),
        }
    elif stored is not None:
        origin = {"type": "user", "sender_user": bot.user(), "date": stored["date"]}
    else:
        origin = {"type": "hidden_user", "sender_user_name": "Unknown", "date": now_unix()}
    fields: dict[str, Any] = {"forward_origin": origin}
    fields.update(content or {"text": ""})
    return ok_response(deliver(emu, bot, "forwardMessage", params, chat, fields))


def send_media_group(emu: Emulator, bot: BotState, params: Params) -> Handled:
    """An album: 1-10 messages sharing a media_group_id, counted as that many by flood
    control (all or none go)."""
    raw = p_str(params, "media")
    if not raw:
        raise ApiError(400, 'Bad Request: parameter "media" is required')
    items = album_items(
        emu, params, p_json(params, "media", "Bad Request: can't parse media JSON object")
    )
    chat = chat_param(emu, bot, params)
    fields = common_fields(emu, bot, chat, params)
    if p_bool(params, "protect_content"):
        fields["has_protected_content"] = True
    check_blocked(chat)
    check_flood(emu, bot, chat, len(items))
    group_id = str(random.getrandbits(63))
    messages = [
        new_message(emu, bot, chat, {**fields, "media_group_id": group_id, **item})
        for item in items
    ]
    record(emu, bot, "sendMediaGroup", chat.id, params, messages)
    return ok_response(messages)
