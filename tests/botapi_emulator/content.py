"""Messages without a file: sendLocation, sendVenue, sendContact, sendPoll, sendDice.

Parameters are read as telegram-bot-api reads them (``Client::process_send_*_query``); the
checks TDLib makes come with TDLib's error texts."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.errors import ApiError
from botapi_emulator.formatting import auto_entities
from botapi_emulator.messages import chat_param, common_fields, deliver, formatted, reply_markup
from botapi_emulator.params import p_bool, p_int, p_json, p_num, p_str
from botapi_emulator.protocol import Handled, Params, ok_response

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

# dice emoji -> the highest value it can show
DICE = {"🎲": 6, "🎯": 6, "🎳": 6, "🏀": 5, "⚽": 5, "🎰": 64}
MAX_POLL_OPTIONS = 12
MAX_POLL_QUESTION = 300
MAX_POLL_OPTION = 100


def _send(
    emu: Emulator, bot: BotState, params: Params, method: str, content: dict[str, Any]
) -> Handled:
    markup = reply_markup(params)
    chat = chat_param(emu, bot, params)
    fields = common_fields(emu, bot, chat, params)
    fields.update(content)
    if p_bool(params, "protect_content"):
        fields["has_protected_content"] = True
    if markup:
        fields["reply_markup"] = markup
    return ok_response(deliver(emu, bot, method, params, chat, fields))


def _location(params: Params) -> dict[str, Any]:
    """``Client::get_location``: both coordinates present, then TDLib's range check."""
    for name in ("latitude", "longitude"):
        if not (p_str(params, name) or "").strip():
            raise ApiError(400, f"Bad Request: {name} is empty")
    latitude = p_num(params, "latitude", 0.0)
    longitude = p_num(params, "longitude", 0.0)
    valid = math.isfinite(latitude) and math.isfinite(longitude)
    if not valid or abs(latitude) > 90 or abs(longitude) > 180:
        raise ApiError(400, "Bad Request: invalid location specified")
    location: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    accuracy = p_num(params, "horizontal_accuracy", 0.0)
    if accuracy > 0:
        location["horizontal_accuracy"] = min(accuracy, 1500.0)
    return location


def send_location(emu: Emulator, bot: BotState, params: Params) -> Handled:
    location = _location(params)
    live_period = p_int(params, "live_period", 0)
    if live_period:
        if not 60 <= live_period <= 86400 and live_period != 0x7FFFFFFF:
            raise ApiError(400, "Bad Request: wrong live location period specified")
        location["live_period"] = live_period
        heading = p_int(params, "heading", 0)
        if 1 <= heading <= 360:
            location["heading"] = heading
        radius = p_int(params, "proximity_alert_radius", 0)
        if radius > 0:
            location["proximity_alert_radius"] = radius
    return _send(emu, bot, params, "sendLocation", {"location": location})


def send_venue(emu: Emulator, bot: BotState, params: Params) -> Handled:
    location = _location(params)
    venue: dict[str, Any] = {
        "location": location,
        "title": p_str(params, "title") or "",
        "address": p_str(params, "address") or "",
    }
    for provider in ("foursquare", "google_place"):
        for suffix in ("id", "type"):
            value = p_str(params, f"{provider}_{suffix}")
            if value:
                venue[f"{provider}_{suffix}"] = value
    return _send(emu, bot, params, "sendVenue", {"venue": venue, "location": location})


def send_contact(emu: Emulator, bot: BotState, params: Params) -> Handled:
    contact: dict[str, Any] = {}
    for name in ("phone_number", "first_name"):
        value = p_str(params, name)
        if not value:
            raise ApiError(400, f'Bad Request: parameter "{name}" is required')
        contact[name] = value
    for name in ("last_name", "vcard"):
        if p_str(params, name):
            contact[name] = p_str(params, name)
    return _send(emu, bot, params, "sendContact", {"contact": contact})


def _poll_options(params: Params) -> list[dict[str, Any]]:
    """``Client::get_input_poll_options``, then TDLib's count and length checks."""
    value = p_json(params, "options", "Bad Request: can't parse options JSON object")
    if not isinstance(value, list):
        raise ApiError(400, "Bad Request: expected an Array of String as options")
    options = []
    for index, option in enumerate(value):
        if isinstance(option, dict):
            if not isinstance(option.get("text"), str):
                raise ApiError(400, 'Bad Request: field "text" must be of type String')
            text, entities = formatted(
                {**option, "parse_mode": option.get("text_parse_mode")},
                "text",
                "text_entities",
                None,
            )
        elif isinstance(option, str):
            text, entities = option, []
        else:
            raise ApiError(400, "Bad Request: expected an option to be of type String")
        if len(text) > MAX_POLL_OPTION:
            raise ApiError(
                400, f"Bad Request: poll options length must not exceed {MAX_POLL_OPTION}"
            )
        described: dict[str, Any] = {
            "persistent_id": str(index),
            "text": text,
            "voter_count": 0,
        }
        if entities:
            described["text_entities"] = entities
        options.append(described)
    if not options:
        raise ApiError(400, "Bad Request: poll must have at least one answer option")
    if len(options) > MAX_POLL_OPTIONS:
        raise ApiError(400, f"Bad Request: poll can't have more than {MAX_POLL_OPTIONS} options")
    if len(options) == 1:
        raise ApiError(400, "Bad Request: POLL_ANSWERS_INVALID")
    return options


def send_poll(emu: Emulator, bot: BotState, params: Params) -> Handled:
    question, question_entities = formatted(
        {**params, "parse_mode": params.get("question_parse_mode")},
        "question",
        "question_entities",
        "Bad Request: poll question must be non-empty",
    )
    options = _poll_options(params)
    if len(question) > MAX_POLL_QUESTION:
        raise ApiError(
            400, f"Bad Request: poll question length must not exceed {MAX_POLL_QUESTION}"
        )
    kind = (p_str(params, "type") or "").strip() or "regular"
    if kind not in ("regular", "quiz"):
        raise ApiError(400, "Bad Request: unsupported poll type specified")
    poll: dict[str, Any] = {
        "id": str(random.getrandbits(62)),
        "question": question,
    }
    if question_entities:
        poll["question_entities"] = question_entities
    poll.update(
        {
            "options": options,
            "total_voter_count": 0,
            "is_closed": p_bool(params, "is_closed"),
            "is_anonymous": p_bool(params, "is_anonymous") if "is_anonymous" in params else True,
            "type": kind,
            "allows_multiple_answers": p_bool(params, "allows_multiple_answers"),
            "allows_revoting": (
                p_bool(params, "allows_revoting") if "allows_revoting" in params else kind != "quiz"
            ),
            "members_only": p_bool(params, "members_only"),
        }
    )
    if kind == "quiz":
        correct = p_int(params, "correct_option_id", -1) if "correct_option_id" in params else None
        if correct is None:
            raise ApiError(400, "Bad Request: correct quiz option list must be non-empty")
        if not 0 <= correct < len(options):
            raise ApiError(400, "Bad Request: wrong quiz correct_option_id")
        poll["correct_option_id"] = correct
        explanation, entities = formatted(
            {**params, "parse_mode": params.get("explanation_parse_mode")},
            "explanation",
            "explanation_entities",
            None,
        )
        if explanation:
            poll["explanation"] = explanation
            entities = auto_entities(explanation, entities)
            if entities:
                poll["explanation_entities"] = entities
    open_period = p_int(params, "open_period", 0)
    if 5 <= open_period <= 2628000:
        poll["open_period"] = open_period
    elif p_int(params, "close_date", 0) > 0:
        poll["close_date"] = p_int(params, "close_date", 0)
    return _send(emu, bot, params, "sendPoll", {"poll": poll})


def send_dice(emu: Emulator, bot: BotState, params: Params) -> Handled:
    emoji = (p_str(params, "emoji") or "").strip() or "🎲"
    highest = DICE.get(emoji.replace("\ufe0f", ""))
    if highest is None:
        raise ApiError(400, "Bad Request: DICE_EMOJI_INVALID")
    dice = {"emoji": emoji, "value": random.randint(1, highest)}
    return _send(emu, bot, params, "sendDice", {"dice": dice})
