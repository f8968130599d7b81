"""getMe, logOut, close."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botapi_emulator.bots import BotState
from botapi_emulator.errors import ApiError
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
    """Stop this server's instance of the bot, keeping its queue (logOut would clear it): a
    pending getUpdates fails with "restart"; the next request launches it again. Refused with
    429 in the first 10 minutes after the instance launched (see Emulator.close_refused_for)."""
    retry_after = emu.close_refused_for(bot)
    if retry_after:
        raise ApiError(
            429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
        )
    bot.launched_at = None
    bot.wake("closed")
    log.info("%s closed on this server (its queue is kept)", safe_bot_ref(bot.id))
    return Response(200, OK_TRUE)
