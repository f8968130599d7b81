"""Answering interactions: answerCallbackQuery, answerInlineQuery (query ids the bot has
received in injected updates, each answered once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botapi_emulator.bots import BotState
from botapi_emulator.constants import QUERY_INVALID
from botapi_emulator.errors import ApiError
from botapi_emulator.messages import record
from botapi_emulator.params import p_json, p_str
from botapi_emulator.protocol import OK_TRUE, Handled, Params, Response

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator

MAX_INLINE_RESULTS = 50


def answer_callback_query(emu: Emulator, bot: BotState, params: Params) -> Handled:
    query_id = (p_str(params, "callback_query_id") or "").strip()
    if query_id not in bot.callback_ids:
        raise ApiError(400, QUERY_INVALID)
    if len(p_str(params, "text") or "") > 200:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    bot.callback_ids.discard(query_id)
    record(emu, bot, "answerCallbackQuery", None, params, True)
    return Response(200, OK_TRUE)


def answer_inline_query(emu: Emulator, bot: BotState, params: Params) -> Handled:
    query_id = (p_str(params, "inline_query_id") or "").strip()
    if not p_str(params, "results"):
        raise ApiError(400, 'Bad Request: parameter "results" is required')
    results = p_json(params, "results", "Bad Request: can't parse inline query results JSON object")
    if not isinstance(results, list):
        raise ApiError(400, "Bad Request: expected an Array of inline query results")
    if len(results) > MAX_INLINE_RESULTS:
        raise ApiError(400, "Bad Request: too many inline query results specified")
    for result in results:
        if not isinstance(result, dict):
            raise ApiError(400, "Bad Request: inline query result must be an object")
        if not isinstance(result.get("type"), str) or not result.get("id"):
            raise ApiError(
                400, "Bad Request: can't parse inline query result: type and id are required"
            )
        if len(str(result["id"]).encode()) > 64:
            raise ApiError(400, "Bad Request: RESULT_ID_INVALID")
    if len({str(result["id"]) for result in results}) != len(results):
        raise ApiError(400, "Bad Request: RESULT_ID_DUPLICATE")
    if query_id not in bot.inline_ids:
        raise ApiError(400, QUERY_INVALID)
    bot.inline_ids.discard(query_id)
    record(emu, bot, "answerInlineQuery", None, params, True)
    return Response(200, OK_TRUE)
