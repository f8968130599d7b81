"""The Bot API methods the emulator implements: name -> handler (case-insensitive lookup)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from botapi_emulator import (
    account,
    chat_info,
    content,
    editing,
    polling,
    queries,
    received,
    sending,
)
from botapi_emulator.bots import BotState
from botapi_emulator.files import MEDIA_METHODS
from botapi_emulator.protocol import Handled, Params

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

MethodHandler = Callable[["Emulator", BotState, Params], Handled]

_TABLE: dict[str, MethodHandler] = {
    "getMe": account.get_me,
    "logOut": account.log_out,
    "close": account.close,
    "getUpdates": polling.get_updates,
    "setWebhook": polling.set_webhook,
    "deleteWebhook": polling.delete_webhook,
    "getWebhookInfo": polling.get_webhook_info,
    "sendMessage": sending.send_message,
    "sendMediaGroup": sending.send_media_group,
    "sendChatAction": sending.send_chat_action,
    "copyMessage": sending.copy_message,
    "forwardMessage": sending.forward_message,
    "sendLocation": content.send_location,
    "sendVenue": content.send_venue,
    "sendContact": content.send_contact,
    "sendPoll": content.send_poll,
    "sendDice": content.send_dice,
    "editMessageText": editing.edit_message_text,
    "editMessageCaption": editing.edit_message_caption,
    "editMessageMedia": editing.edit_message_media,
    "editMessageReplyMarkup": editing.edit_message_reply_markup,
    "deleteMessage": editing.delete_message,
    "deleteMessages": editing.delete_messages,
    "pinChatMessage": editing.pin_chat_message,
    "unpinChatMessage": editing.unpin_chat_message,
    "setMessageReaction": editing.set_message_reaction,
    "answerCallbackQuery": queries.answer_callback_query,
    "answerInlineQuery": queries.answer_inline_query,
    "getChat": chat_info.get_chat,
    "getChatMember": chat_info.get_chat_member,
    "getFile": received.get_file,
}
for _kind, _method in MEDIA_METHODS.items():
    _TABLE[_method] = functools.partial(sending.send_media, kind=_kind)

# lower-cased name -> (the method's own spelling, handler): Telegram ignores the case
METHODS: dict[str, tuple[str, MethodHandler]] = {
    name.lower(): (name, handler) for name, handler in _TABLE.items()
}
