"""Reading about chats: getChat (a ChatFullInfo), getChatMember."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.errors import ApiError
from botapi_emulator.messages import chat_param
from botapi_emulator.params import p_int
from botapi_emulator.protocol import Handled, Params, ok_response

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

# what a bot may do as a channel's administrator (the emulator's bots post in their channels)
CHANNEL_ADMIN_RIGHTS = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": False,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": False,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
    "can_send_welcome_messages": False,
    "can_post_messages": True,
    "can_edit_messages": True,
}


def get_chat(emu: Emulator, bot: BotState, params: Params) -> Handled:
    chat = chat_param(emu, bot, params)
    info = chat.to_chat()
    info["accent_color_id"] = abs(chat.id) % 7
    info["max_reaction_count"] = 11
    info["accepted_gift_types"] = {
        "unlimited_gifts": False,
        "limited_gifts": False,
        "unique_gifts": False,
        "premium_subscription": False,
        "gifts_from_channels": False,
    }
    return ok_response(info)


def get_chat_member(emu: Emulator, bot: BotState, params: Params) -> Handled:
    """The bot itself (an administrator of channels, a member elsewhere), the user of a
    private chat, or a user the bot has seen in an update of that chat."""
    chat = chat_param(emu, bot, params)
    user_id = p_int(params, "user_id", 0)
    if user_id <= 0:
        raise ApiError(400, "Bad Request: invalid user_id specified")
    member: dict[str, Any]
    if user_id == bot.id:
        member = {"user": bot.user(), "status": "member"}
        if chat.type == "channel":
            member = {"user": bot.user(), "status": "administrator", **CHANNEL_ADMIN_RIGHTS}
        elif chat.blocked:
            member = {"user": bot.user(), "status": "kicked", "until_date": 0}
    elif chat.type == "private" and user_id == chat.id:
        user = {"id": chat.id, "is_bot": False, "first_name": chat.to_chat()["first_name"]}
        if chat.last_name:
            user["last_name"] = chat.last_name
        if chat.username:
            user["username"] = chat.username
        member = {"user": user, "status": "member"}
    elif user_id in chat.members:
        member = {"user": chat.members[user_id], "status": "member"}
    else:
        raise ApiError(400, "Bad Request: user not found")
    return ok_response(member)
