"""Building and recording messages: chats by id or @username, parse modes, keyboards,
replies, flood control, the sent log."""

from __future__ import annotations

import json
import json.encoder
import time
from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState
from botapi_emulator.encoding import now_unix
from botapi_emulator.errors import ApiError
from botapi_emulator.formatting import PARSE_MODES, EntityParseError
from botapi_emulator.params import p_bool, p_int, p_json, p_str
from botapi_emulator.protocol import Params, flood_error
from botapi_emulator.uploads import Upload

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


INLINE_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


COPYABLE_FIELDS = (
    "text",
    "entities",
    "link_preview_options",
    "photo",
    "document",
    "audio",
    "video",
    "voice",
    "animation",
    "video_note",
    "sticker",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "caption",
    "caption_entities",
    "show_caption_above_media",
    "has_media_spoiler",
)


def parse_inline_keyboard(rows: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(
            400,
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup should be an '
            "Array of Arrays",
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: "
                    'Field "text" must be of type String',
                )
            if not any(action in button for action in INLINE_BUTTON_ACTIONS):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard",
                )
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return rows


def parse_entities_value(value: Any, error: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, error) from None
    if not isinstance(value, list):
        raise ApiError(400, error)
    for entity in value:
        if (
            not isinstance(entity, dict)
            or not isinstance(entity.get("type"), str)
            or not isinstance(entity.get("offset"), int)
            or not isinstance(entity.get("length"), int)
        ):
            raise ApiError(400, error)
    return [e for e in value if e["length"] > 0]


# ------------------------------------------------------------------ helpers -----
def resolve_chat(emu: Emulator, bot: BotState, raw: Any) -> ChatState:
    if raw is None or raw == "" or isinstance(raw, Upload):
        raise ApiError(400, "Bad Request: chat_id is empty")
    text = str(raw).strip()
    chat: ChatState | None
    if text.startswith("@"):
        chat = bot.chat_by_username(text[1:])
    else:
        try:
            chat = bot.chats.get(int(text)) if not isinstance(raw, bool) else None
        except ValueError:
            chat = None
    if chat is None:
        raise ApiError(400, "Bad Request: chat not found")
    if chat.migrate_to_chat_id is not None:
        raise ApiError(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            {"migrate_to_chat_id": chat.migrate_to_chat_id},
        )
    return chat


def chat_param(emu: Emulator, bot: BotState, params: Params, key: str = "chat_id") -> ChatState:
    return resolve_chat(emu, bot, params.get(key))


def check_blocked(chat: ChatState) -> None:
    if not chat.blocked:
        return
    description = {
        "private": "Forbidden: bot was blocked by the user",
        "group": "Forbidden: bot was kicked from the group chat",
        "supergroup": "Forbidden: bot was kicked from the supergroup chat",
        "channel": "Forbidden: bot is not a member of the channel chat",
    }[chat.type]
    raise ApiError(403, description)


def check_flood(emu: Emulator, bot: BotState, chat: ChatState, count: int = 1) -> None:
    """429 unless ``count`` messages may go into ``chat`` now; else they are counted."""
    limits = emu.limits
    if not limits.enabled:
        return
    now = time.monotonic()
    wait, which = bot.flood.check(limits, chat, now, count)
    if wait > 0:
        emu.stats.flood_by_limit[which] += 1
        raise flood_error(wait)
    bot.flood.commit(limits, chat, now, count)


def formatted(
    params: Params,
    text_key: str,
    entities_key: str,
    empty_error: str | None,
) -> tuple[str, list[dict[str, Any]]]:
    """Text after parse_mode / entities; ``empty_error`` set = the text is required."""
    raw = p_str(params, text_key)
    if not raw:
        if empty_error:
            raise ApiError(400, empty_error)
        return "", []
    if params.get(entities_key) is not None:
        entities = parse_entities_value(
            params.get(entities_key), f"Bad Request: can't parse {entities_key} JSON object"
        )
        text = raw
    else:
        mode = (p_str(params, "parse_mode") or "").strip()
        if not mode:
            text, entities = raw, []
        else:
            parser = PARSE_MODES.get(mode.lower())
            if parser is None:
                raise ApiError(400, "Bad Request: unsupported parse_mode")
            try:
                text, entities = parser(raw)
            except EntityParseError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
    if empty_error and not text.strip():
        raise ApiError(400, empty_error)
    return text, entities


def reply_markup(params: Params) -> dict[str, Any] | None:
    """Validated reply_markup; the inline keyboard (the part a Message shows) or None."""
    error = "Bad Request: can't parse reply keyboard markup JSON object"
    value = p_json(params, "reply_markup", error)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, error)
    if "inline_keyboard" in value:
        rows = parse_inline_keyboard(value["inline_keyboard"])
        return {"inline_keyboard": rows} if rows else None
    if "keyboard" in value:
        rows = value["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ApiError(
                400,
                'Bad Request: field "keyboard" of the ReplyKeyboardMarkup should be an '
                "Array of Arrays",
            )
        return None
    if "remove_keyboard" in value or "force_reply" in value:
        return None
    raise ApiError(400, error)


def reply_target(
    emu: Emulator, bot: BotState, chat: ChatState, params: Params
) -> dict[str, Any] | None:
    error = "Bad Request: can't parse reply parameters JSON object"
    spec = p_json(params, "reply_parameters", error)
    if spec is None:
        message_id = p_int(params, "reply_to_message_id", 0)
        if not message_id:
            return None
        spec = {
            "message_id": message_id,
            "allow_sending_without_reply": p_bool(params, "allow_sending_without_reply"),
        }
    if not isinstance(spec, dict):
        raise ApiError(400, error)
    message_id = p_int(spec, "message_id", 0)
    target = chat
    if spec.get("chat_id") not in (None, ""):
        target = resolve_chat(emu, bot, spec["chat_id"])
    if target.message_exists(message_id):
        stored = target.messages.get(message_id)
        if stored is not None:
            return {k: v for k, v in stored.items() if k != "reply_to_message"}
        return {"message_id": message_id, "chat": target.to_chat(), "date": now_unix()}
    if p_bool(spec, "allow_sending_without_reply"):
        return None
    raise ApiError(400, "Bad Request: message to be replied not found")


def common_fields(emu: Emulator, bot: BotState, chat: ChatState, params: Params) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    thread = p_int(params, "message_thread_id", 0)
    if thread and chat.type == "supergroup":
        fields["message_thread_id"] = thread
        if chat.is_forum:
            fields["is_topic_message"] = True
    reply = reply_target(emu, bot, chat, params)
    if reply is not None:
        fields["reply_to_message"] = reply
    return fields


def new_message(
    emu: Emulator, bot: BotState, chat: ChatState, fields: dict[str, Any]
) -> dict[str, Any]:
    chat.last_message_id += 1
    message_id = chat.last_message_id
    message: dict[str, Any] = {"message_id": message_id}
    if chat.type == "channel":
        message["sender_chat"] = chat.to_chat()
    else:
        message["from"] = bot.user()
    message["chat"] = chat.to_chat()
    message["date"] = now_unix()
    message.update(fields)
    chat.messages[message_id] = message
    if emu.journal:
        emu.journal.message_id(bot.id, chat.id, message_id)
    return message


def record(
    emu: Emulator, bot: BotState, method: str, chat_id: int | None, params: Params, result: Any
) -> None:
    emu.sent_seq += 1
    described = {k: v.describe() if isinstance(v, Upload) else v for k, v in params.items()}
    bot.sent.append(
        {
            "seq": emu.sent_seq,
            "time": time.time(),
            "method": method,
            "chat_id": chat_id,
            "params": described,
            "result": result,
        }
    )


def deliver(
    emu: Emulator,
    bot: BotState,
    method: str,
    params: Params,
    chat: ChatState,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """Blocked check, flood control, then the message exists and is recorded."""
    check_blocked(chat)
    check_flood(emu, bot, chat)
    message = new_message(emu, bot, chat, fields)
    record(emu, bot, method, chat.id, params, message)
    return message
