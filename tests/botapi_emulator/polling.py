"""getUpdates (offset, limit, long poll, allowed_updates, 409 Conflict) and webhooks."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from botapi_emulator.bots import BotState
from botapi_emulator.constants import (
    CONFLICT_OTHER_POLLER,
    CONFLICT_SET_WEBHOOK,
    CONFLICT_WEBHOOK_ACTIVE,
    RESTART_DESCRIPTION,
)
from botapi_emulator.errors import ApiError
from botapi_emulator.params import p_bool, p_int, p_json, p_num, p_str
from botapi_emulator.protocol import Handled, Params, Response, error_response, ok_raw, ok_response

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


def set_allowed_updates(emu: Emulator, bot: BotState, params: Params) -> None:
    if params.get("allowed_updates") in (None, ""):
        return
    value = p_json(
        params, "allowed_updates", "Bad Request: can't parse allowed_updates JSON object"
    )
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "Bad Request: can't parse allowed_updates JSON object")
    new = value or None
    if new != bot.allowed_updates:
        bot.allowed_updates = new
        if emu.journal:
            emu.journal.record("allow", b=bot.id, a=new)


def get_updates(emu: Emulator, bot: BotState, params: Params) -> Handled:
    if bot.webhook is not None:
        raise ApiError(409, CONFLICT_WEBHOOK_ACTIVE)
    offset = p_int(params, "offset", 0)
    limit = min(max(p_int(params, "limit", 100), 1), 100)
    timeout = min(max(p_num(params, "timeout", 0.0), 0.0), 50.0)
    set_allowed_updates(emu, bot, params)
    bot.wake("conflict")
    if bot.confirm(offset):
        emu.journal_offset(bot)
    result = emu.collect_json(bot, limit)
    if len(result) > 2 or timeout <= 0:
        return ok_raw(result)
    return long_poll(emu, bot, limit, timeout)


async def long_poll(emu: Emulator, bot: BotState, limit: int, timeout: float) -> Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        waiter: asyncio.Future[str] = loop.create_future()
        bot.poller = waiter
        timer = loop.call_later(max(deadline - loop.time(), 0.0), _settle, waiter, "timeout")
        try:
            reason = await waiter
        finally:
            timer.cancel()
            if bot.poller is waiter:
                bot.poller = None
        if reason == "conflict":
            return error_response(409, CONFLICT_OTHER_POLLER)
        if reason == "webhook":
            return error_response(409, CONFLICT_SET_WEBHOOK)
        if reason == "closed":
            return error_response(500, RESTART_DESCRIPTION)
        result = emu.collect_json(bot, limit)
        if len(result) > 2 or reason == "timeout" or loop.time() >= deadline:
            return ok_raw(result)


def set_webhook(emu: Emulator, bot: BotState, params: Params) -> Handled:
    url = (p_str(params, "url") or "").strip()
    if not url:
        return delete_webhook(emu, bot, params)
    parsed = urllib.parse.urlsplit(url)
    schemes = ("http", "https") if emu.opts.local else ("https",)
    if parsed.scheme.lower() not in schemes:
        raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    if not parsed.hostname:
        raise ApiError(400, "Bad Request: bad webhook: Wrong HTTP URL specified")
    secret = p_str(params, "secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    default_max = emu.opts.max_webhook_connections or (100 if emu.opts.local else 40)
    max_connections = p_int(params, "max_connections", default_max)
    max_connections = min(max(max_connections, 1), 100000 if emu.opts.local else 100)
    set_allowed_updates(emu, bot, params)
    webhook: dict[str, Any] = {
        "url": url,
        "max_connections": max_connections,
        "has_custom_certificate": params.get("certificate") is not None,
    }
    if p_str(params, "ip_address"):
        webhook["ip_address"] = p_str(params, "ip_address")
    if p_bool(params, "drop_pending_updates"):
        bot.drop_pending()
        emu.journal_offset(bot)
    description = "Webhook is already set" if bot.webhook == webhook else "Webhook was set"
    bot.webhook = webhook
    if emu.journal:
        emu.journal.record("wh", b=bot.id, w=webhook)
    bot.wake("webhook")
    return ok_response(True, description)


def delete_webhook(emu: Emulator, bot: BotState, params: Params) -> Handled:
    if p_bool(params, "drop_pending_updates"):
        bot.drop_pending()
        emu.journal_offset(bot)
    description = "Webhook was deleted" if bot.webhook else "Webhook is already deleted"
    bot.webhook = None
    if emu.journal:
        emu.journal.record("wh", b=bot.id, w=None)
    return ok_response(True, description)


def get_webhook_info(emu: Emulator, bot: BotState, params: Params) -> Handled:
    webhook = bot.webhook or {}
    info: dict[str, Any] = {
        "url": webhook.get("url", ""),
        "has_custom_certificate": bool(webhook.get("has_custom_certificate")),
        "pending_update_count": bot.pending_count,
    }
    if webhook:
        info["max_connections"] = webhook["max_connections"]
        if "ip_address" in webhook:
            info["ip_address"] = webhook["ip_address"]
    if bot.allowed_updates is not None:
        info["allowed_updates"] = bot.allowed_updates
    return ok_response(info)


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)
