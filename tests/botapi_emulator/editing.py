"""Changing what was sent: editMessageText, editMessageCaption, editMessageMedia,
editMessageReplyMarkup, deleteMessage, deleteMessages, pinChatMessage, unpinChatMessage,
setMessageReaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState
from botapi_emulator.constants import MAX_CAPTION_LENGTH, MAX_TEXT_LENGTH, NOT_MODIFIED
from botapi_emulator.encoding import now_unix
from botapi_emulator.errors import ApiError
from botapi_emulator.files import CAPTIONED_KINDS
from botapi_emulator.formatting import auto_entities
from botapi_emulator.input_media import INPUT_MEDIA_TYPES, media_message_fields
from botapi_emulator.messages import (
    chat_param,
    check_blocked,
    check_flood,
    formatted,
    record,
    reply_markup,
)
from botapi_emulator.params import p_int, p_json, p_str
from botapi_emulator.protocol import OK_TRUE, Handled, Params, Response, ok_response

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

MEDIA_FIELDS = ("photo", "video", "animation", "audio", "document", "voice")
MAX_DELETED_AT_ONCE = 100


def _editable(
    emu: Emulator, bot: BotState, params: Params
) -> tuple[ChatState, int, dict[str, Any]]:
    """The chat, id and stored content of the message an edit names."""
    if p_str(params, "inline_message_id"):
        raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat = chat_param(emu, bot, params)
    message_id = p_int(params, "message_id", 0)
    if message_id <= 0:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    old = chat.messages.get(message_id)
    if old is None:
        if chat.message_exists(message_id):
            raise ApiError(400, "Bad Request: message can't be edited")
        raise ApiError(400, "Bad Request: message to edit not found")
    return chat, message_id, old


def _store_edit(
    emu: Emulator,
    bot: BotState,
    method: str,
    params: Params,
    chat: ChatState,
    message_id: int,
    new: dict[str, Any],
) -> Handled:
    """Blocked check, flood control (an edit counts like a message), then the new version."""
    check_blocked(chat)
    check_flood(emu, bot, chat)
    new["edit_date"] = now_unix()
    chat.messages[message_id] = new
    record(emu, bot, method, chat.id, params, new)
    return ok_response(new)


def _with_markup(message: dict[str, Any], markup: dict[str, Any] | None) -> dict[str, Any]:
    new = {k: v for k, v in message.items() if k not in ("reply_markup", "edit_date")}
    if markup:
        new["reply_markup"] = markup
    return new


def edit_message_text(emu: Emulator, bot: BotState, params: Params) -> Handled:
    text, entities = formatted(params, "text", "entities", "Bad Request: message text is empty")
    markup = reply_markup(params)
    chat, message_id, old = _editable(emu, bot, params)
    if len(text) > MAX_TEXT_LENGTH:
        raise ApiError(400, "Bad Request: message is too long")
    if "text" not in old:
        raise ApiError(400, "Bad Request: there is no text in the message to edit")
    entities = auto_entities(text, entities)
    if (
        old.get("text") == text
        and old.get("entities", []) == entities
        and old.get("reply_markup") == markup
    ):
        raise ApiError(400, NOT_MODIFIED)
    new = _with_markup({k: v for k, v in old.items() if k not in ("text", "entities")}, markup)
    new["text"] = text
    if entities:
        new["entities"] = entities
    return _store_edit(emu, bot, "editMessageText", params, chat, message_id, new)


def edit_message_caption(emu: Emulator, bot: BotState, params: Params) -> Handled:
    caption, entities = formatted(params, "caption", "caption_entities", None)
    markup = reply_markup(params)
    chat, message_id, old = _editable(emu, bot, params)
    if len(caption) > MAX_CAPTION_LENGTH:
        raise ApiError(400, "Bad Request: message caption is too long")
    if not any(kind in old for kind in CAPTIONED_KINDS):
        raise ApiError(400, "Bad Request: there is no caption in the message to edit")
    entities = auto_entities(caption, entities)
    if (
        old.get("caption", "") == caption
        and old.get("caption_entities", []) == entities
        and old.get("reply_markup") == markup
    ):
        raise ApiError(400, NOT_MODIFIED)
    skip = ("caption", "caption_entities")
    new = _with_markup({k: v for k, v in old.items() if k not in skip}, markup)
    if caption:
        new["caption"] = caption
        if entities:
            new["caption_entities"] = entities
    return _store_edit(emu, bot, "editMessageCaption", params, chat, message_id, new)


def edit_message_media(emu: Emulator, bot: BotState, params: Params) -> Handled:
    error = "Bad Request: can't parse input media JSON object"
    if not p_str(params, "media"):
        raise ApiError(400, 'Bad Request: parameter "media" is required')
    _, fields = media_message_fields(emu, params, p_json(params, "media", error), INPUT_MEDIA_TYPES)
    markup = reply_markup(params)
    chat, message_id, old = _editable(emu, bot, params)
    if not any(kind in old for kind in MEDIA_FIELDS):
        raise ApiError(400, "Bad Request: there is no media in the message to edit")
    skip = ("caption", "caption_entities", "show_caption_above_media", "has_media_spoiler")
    kept = {k: v for k, v in old.items() if k not in MEDIA_FIELDS and k not in skip}
    new = _with_markup(kept, markup)
    new.update(fields)
    return _store_edit(emu, bot, "editMessageMedia", params, chat, message_id, new)


def edit_message_reply_markup(emu: Emulator, bot: BotState, params: Params) -> Handled:
    markup = reply_markup(params)
    chat, message_id, old = _editable(emu, bot, params)
    if old.get("reply_markup") == markup:
        raise ApiError(400, NOT_MODIFIED)
    new = _with_markup(old, markup)
    return _store_edit(emu, bot, "editMessageReplyMarkup", params, chat, message_id, new)


def delete_message(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat = chat_param(emu, bot, params)
    message_id = p_int(params, "message_id", 0)
    if message_id <= 0:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    if not chat.message_exists(message_id):
        raise ApiError(400, "Bad Request: message to delete not found")
    chat.deleted.add(message_id)
    chat.messages.pop(message_id, None)
    record(emu, bot, "deleteMessage", chat.id, params, True)
    return Response(200, OK_TRUE)


def delete_messages(emu: Emulator, bot: BotState, params: Params) -> Handled:
    """Messages that do not exist are skipped, as Telegram does."""
    chat = chat_param(emu, bot, params)
    if not p_str(params, "message_ids"):
        raise ApiError(400, "Bad Request: message identifiers are not specified")
    ids = p_json(params, "message_ids", "Bad Request: can't parse message_ids JSON object")
    if not isinstance(ids, list):
        raise ApiError(400, "Bad Request: expected an Array of message identifiers")
    if len(ids) > MAX_DELETED_AT_ONCE:
        raise ApiError(400, "Bad Request: too many message identifiers specified")
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ApiError(400, "Bad Request: invalid message identifier specified")
    for message_id in {p_int({"id": value}, "id", 0) for value in ids}:
        if chat.message_exists(message_id):
            chat.deleted.add(message_id)
            chat.messages.pop(message_id, None)
    record(emu, bot, "deleteMessages", chat.id, params, True)
    return Response(200, OK_TRUE)


def pin_chat_message(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat = chat_param(emu, bot, params)
    message_id = p_int(params, "message_id", 0)
    if message_id <= 0:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    if not chat.message_exists(message_id):
        raise ApiError(400, "Bad Request: message to pin not found")
    check_blocked(chat)
    chat.pinned.add(message_id)
    record(emu, bot, "pinChatMessage", chat.id, params, True)
    return Response(200, OK_TRUE)


def unpin_chat_message(emu: Emulator, bot: BotState, params: Params) -> Handled:
    """Without ``message_id``: the most recently pinned message."""
    chat = chat_param(emu, bot, params)
    message_id = p_int(params, "message_id", 0)
    check_blocked(chat)
    if message_id > 0:
        if not chat.message_exists(message_id):
            raise ApiError(400, "Bad Request: message to unpin not found")
        chat.pinned.discard(message_id)
    elif chat.pinned:
        chat.pinned.discard(max(chat.pinned))
    record(emu, bot, "unpinChatMessage", chat.id, params, True)
    return Response(200, OK_TRUE)


def _reactions(params: Params) -> list[dict[str, Any]]:
    value = p_json(params, "reaction", "Bad Request: can't parse reaction types JSON object")
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "Bad Request: expected an Array of ReactionType")
    for reaction in value:
        if not isinstance(reaction, dict):
            raise ApiError(400, "Bad Request: can't parse ReactionType: expected an Object")
        kind = reaction.get("type")
        if kind == "emoji":
            if not isinstance(reaction.get("emoji"), str) or not reaction["emoji"]:
                raise ApiError(400, "Bad Request: REACTION_INVALID")
        elif kind == "custom_emoji":
            if not isinstance(reaction.get("custom_emoji_id"), str):
                raise ApiError(400, "Bad Request: REACTION_INVALID")
        elif kind != "paid":
            raise ApiError(
                400, "Bad Request: can't parse ReactionType: invalid reaction type specified"
            )
    return value


def set_message_reaction(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat = chat_param(emu, bot, params)
    message_id = p_int(params, "message_id", 0)
    if message_id <= 0:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    reactions = _reactions(params)
    if not chat.message_exists(message_id):
        raise ApiError(400, "Bad Request: message to react not found")
    if len(reactions) > 1:
        raise ApiError(400, "Bad Request: REACTIONS_TOO_MANY")
    check_blocked(chat)
    record(emu, bot, "setMessageReaction", chat.id, params, True)
    return Response(200, OK_TRUE)
