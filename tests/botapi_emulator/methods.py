"""The Bot API methods the emulator implements: name -> handler (case-insensitive lookup)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from botapi_emulator import account, files, polling, sending
from botapi_emulator.bots import BotState
from botapi_emulator.files import MEDIA_KINDS
from botapi_emulator.protocol import Handled, Params

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

MethodHandler = Callable[["Emulator", BotState, Params], Handled]

_TABLE: dict[str, MethodHandler] = {
    "getMe": account.get_me,
    "getUpdates": polling.get_updates,
    "setWebhook": polling.set_webhook,
    "deleteWebhook": polling.delete_webhook,
    "getWebhookInfo": polling.get_webhook_info,
    "logOut": account.log_out,
    "close": account.close,
    "sendMessage": sending.send_message,
    "sendChatAction": sending.send_chat_action,
    "editMessageText": sending.edit_message_text,
    "deleteMessage": sending.delete_message,
    "answerCallbackQuery": sending.answer_callback_query,
    "getChat": sending.get_chat,
    "copyMessage": sending.copy_message,
    "forwardMessage": sending.forward_message,
    "getFile": files.get_file,
}
for _kind in MEDIA_KINDS:
    _TABLE[f"send{_kind.capitalize()}"] = functools.partial(sending.send_media, kind=_kind)

# lower-cased name -> (the method's own spelling, handler): Telegram ignores the case
METHODS: dict[str, tuple[str, MethodHandler]] = {
    name.lower(): (name, handler) for name, handler in _TABLE.items()
}
