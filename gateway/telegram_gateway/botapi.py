"""The Bot API client: raw JSON in, raw JSON out, typed errors.

pyTelegramBotAPI's ``apihelper._make_request`` does the HTTP (requests underneath). We use
only that layer, never the ``TeleBot`` object model: results come back as the JSON the Bot API
returned (dicts), so fields unknown to the library survive untouched. Its threaded
``polling()`` is not used either; the poller drives ``getUpdates`` itself.

Under gevent the requests session is cooperative. One shared session (with a connection
pool large enough for all greenlets of a worker) keeps connections alive. The library reads
its base URL from a module global, so one process talks to one Bot API server
(``TELEGRAM_API_URL``); ``BotApiClient`` refuses a second, different one.

Every call is bounded by a timeout (the real server, without a route to Telegram, may never
answer). Errors: :class:`BotApiUnavailable`, :class:`BotApiTimeout`, :class:`TelegramError`
(see ``errors.py``); none of their messages contain the token.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from telebot import apihelper

from telegram_gateway.config import BotConfig
from telegram_gateway.errors import BotApiTimeout, BotApiUnavailable, TelegramError
from telegram_gateway.redact import redact

logger = logging.getLogger(__name__)

_configure_lock = threading.Lock()
_configured_url: str | None = None


def _configure_library(base_url: str) -> None:
    global _configured_url
    with _configure_lock:
        if _configured_url is None:
            apihelper.API_URL = base_url + "/bot{0}/{1}"
            apihelper.FILE_URL = base_url + "/file/bot{0}/{1}"
            apihelper.RETRY_ON_ERROR = False
            apihelper.ENABLE_MIDDLEWARE = False
            apihelper.SESSION_TIME_TO_LIVE = None
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            apihelper.session = session
            _configured_url = base_url
        elif _configured_url != base_url:
            raise RuntimeError(
                f"one process talks to one Bot API server: {_configured_url} is configured, "
                f"not {base_url}"
            )


def _encode(params: Mapping[str, Any]) -> dict[str, Any]:
    """Bot API parameters as the HTTP layer sends them: objects and arrays as JSON text."""
    encoded: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict | list | tuple):
            encoded[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(value, bool):
            encoded[key] = "true" if value else "false"
        else:
            encoded[key] = value
    return encoded


class BotApiClient:
    """Calls one bot's methods on the local Bot API server."""

    def __init__(self, base_url: str, bot: BotConfig, timeout: float) -> None:
        _configure_library(base_url)
        self.base_url = base_url
        self.bot = bot
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BotApiClient(bot_id={self.bot.bot_id}, base_url={self.base_url!r})"

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``result`` of the Bot API method; raises a :class:`BotApiError` subclass otherwise."""
        request = _encode(params or {})
        bound = timeout if timeout is not None else self.timeout
        if method.lower() == "getupdates":
            # the library sends ``long_polling_timeout`` as Telegram's ``timeout`` and reads
            # the HTTP timeout from ``timeout``
            if "timeout" in request:
                request["long_polling_timeout"] = int(request.pop("timeout"))
            request["timeout"] = bound
        else:
            request["timeout"] = bound
        try:
            return apihelper._make_request(
                self.bot.token,
                method,
                method="post",
                params=request,
                files=dict(files) if files else None,
            )
        except apihelper.ApiTelegramException as exc:
            raise TelegramError(method, dict(exc.result_json)) from None
        except apihelper.ApiHTTPException as exc:
            raise BotApiUnavailable(
                method,
                f"{method}: the Bot API answered HTTP {exc.result.status_code} "
                "without a JSON body; is TELEGRAM_API_URL a Bot API server?",
            ) from None
        except apihelper.ApiInvalidJSONException:
            raise BotApiUnavailable(
                method, f"{method}: the Bot API answered invalid JSON"
            ) from None
        except requests.Timeout:
            raise BotApiTimeout(
                method,
                f"{method}: no answer from the Bot API at {self.base_url} within {bound:g} s",
            ) from None
        except requests.RequestException as exc:
            raise BotApiUnavailable(
                method,
                f"{method}: cannot reach the Bot API at {self.base_url} "
                f"({type(exc).__name__}: {redact(str(exc))[:200]})",
            ) from None

    def envelope(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The Bot API's answer as an envelope (``{"ok": true, "result": ...}`` or its error)."""
        try:
            return {"ok": True, "result": self.call(method, params, files=files, timeout=timeout)}
        except TelegramError as exc:
            return exc.envelope

    def get_me(self, timeout: float | None = None) -> dict[str, Any]:
        return dict(self.call("getMe", timeout=timeout))

    def get_updates(
        self,
        offset: int | None,
        limit: int,
        poll_timeout: int,
        allowed_updates: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One long poll; the HTTP timeout is the poll timeout plus a margin."""
        params: dict[str, Any] = {"limit": limit, "timeout": poll_timeout}
        if offset is not None:
            params["offset"] = offset
        if allowed_updates is not None:
            params["allowed_updates"] = allowed_updates
        result = self.call("getUpdates", params, timeout=poll_timeout + self.timeout)
        return list(result or [])
