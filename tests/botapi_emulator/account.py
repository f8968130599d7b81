"""getMe, logOut, close."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botapi_emulator.bots import BotState
from botapi_emulator.logs import log
from botapi_emulator.protocol import OK_TRUE, Handled, Params, Response, ok_response
from botapi_emulator.tokens import safe_bot_ref

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


# ------------------------------------------------------------------ methods -----
def get_me(emu: Emulator, bot: BotState, params: Params) -> Handled:
    user = bot.user()
    user.update(
        {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
    )
    return ok_response(user)


def log_out(emu: Emulator, bot: BotState, params: Params) -> Handled:
    bot.logged_out = True
    log.info("%s logged out", safe_bot_ref(bot.id))
    return Response(200, OK_TRUE)


def close(emu: Emulator, bot: BotState, params: Params) -> Handled:
    return Response(200, OK_TRUE)
