"""The Bot API's update types, and the type of one Update."""

from __future__ import annotations

from typing import Any

# Bot API 10.3, in the gateway's order: a test keeps this equal to the gateway's own list
# (telegram_gateway.config.ALL_UPDATE_TYPES) and to the Update fields of the model library.
KNOWN_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
    "managed_bot",
    "guest_message",
    "subscription",
    "stopped_message_generation",
)
KNOWN_UPDATE_TYPE_SET = frozenset(KNOWN_UPDATE_TYPES)
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


def update_type_of(update: dict[str, Any]) -> str:
    """The Update's type: its first known update field, else its first other field."""
    other = ""
    for key in update:
        if key == "update_id":
            continue
        if key in KNOWN_UPDATE_TYPE_SET:
            return key
        if not other:
            other = key
    return other or "unknown"
