"""The Bot API client: raw JSON in, raw JSON out, typed errors.

pyTelegramBotAPI's ``apihelper._make_request`` does the HTTP (requests underneath). We use
only that layer, never the ``TeleBot`` object model: results come back as the JSON the Bot API
returned (dicts), so fields unknown to the library survive untouched. Its threaded
``polling()`` is not used either; the poller drives ``getUpdates`` itself.

Under gevent the requests session is cooperative. One shared session (with a connection
pool large enough for all greenlets of a worker) keeps connections alive. The library reads
its base URL from a module global, so one process talks to one Bot API server
(``TELEGRAM_API_URL``); ``BotApiClient`` refuses a second, different one.

``get_updates_raw`` is the one exception to going through ``_make_request``: the poller
needs every Update's JSON *exactly as the Bot API sent it* (it is the NATS payload), so that
method splits the answer's ``result`` array itself, each element parsed once and kept as its
original bytes (nothing re-serialised). It is also the inbound hot path (one call per 100
updates), so it talks over its own keep-alive ``http.client`` connection (cooperative under
gevent): preparing a request through requests costs more CPU than the JetStream publish of
the whole batch. It never logs the URL (which holds the token).

Every call is bounded by a timeout (the real server, without a route to Telegram, may never
answer). Errors: :class:`BotApiUnavailable`, :class:`BotApiTimeout`, :class:`TelegramError`
(see ``errors.py``); none of their messages contain the token.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from telebot import apihelper

from telegram_gateway.config import BotConfig
from telegram_gateway.errors import BotApiTimeout, BotApiUnavailable, TelegramError
from telegram_gateway.redact import redact
from telegram_gateway.updates import encode

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


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_RESULT_ARRAY = re.compile(
    r'[ \t\n\r]*\{[ \t\n\r]*"ok"[ \t\n\r]*:[ \t\n\r]*true[ \t\n\r]*,'
    r'[ \t\n\r]*"result"[ \t\n\r]*:[ \t\n\r]*\['
)
_END = re.compile(r"[ \t\n\r]*\}[ \t\n\r]*\Z")

RawUpdate = tuple[Any, bytes]


def split_result_array(text: str) -> list[RawUpdate] | None:
    """``{"ok":true,"result":[u1,u2,...]}`` -> ``[(u1 parsed, u1's exact UTF-8 bytes), ...]``;
    None when the answer has another shape (the caller then parses it as a whole)."""
    match = _RESULT_ARRAY.match(text)
    if match is None:
        return None
    items: list[RawUpdate] = []
    index = _SPACE.match(text, match.end()).end()  # type: ignore[union-attr]
    if text.startswith("]", index):
        index += 1
    else:
        while True:
            try:
                value, end = _DECODER.raw_decode(text, index)
            except ValueError:
                return None
            items.append((value, text[index:end].encode()))
            index = _SPACE.match(text, end).end()  # type: ignore[union-attr]
            if text.startswith(",", index):
                index = _SPACE.match(text, index + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", index):
                index += 1
                break
            else:
                return None
    return items if _END.match(text, index) else None


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
        self._poll_connection: http.client.HTTPConnection | None = None

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

    def get_updates_raw(
        self,
        offset: int | None,
        limit: int,
        poll_timeout: int,
        allowed_updates: list[str] | None = None,
    ) -> list[RawUpdate]:
        """One long poll; every Update as ``(parsed JSON, its exact bytes as served)``.
        Errors as :meth:`call` raises them."""
        method = "getUpdates"
        params: dict[str, Any] = {"limit": limit, "timeout": poll_timeout}
        if offset is not None:
            params["offset"] = offset
        if allowed_updates is not None:
            params["allowed_updates"] = allowed_updates
        bound = poll_timeout + self.timeout
        body = urlencode(_encode(params)).encode()
        status, content = self._post_poll(method, body, bound)
        text = content.decode("utf-8", errors="replace")
        if status == 200:
            items = split_result_array(text)
            if items is not None:
                return items
        try:
            envelope = json.loads(text)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            raise BotApiUnavailable(
                method,
                f"{method}: the Bot API answered HTTP {status} without a JSON "
                "body; is TELEGRAM_API_URL a Bot API server?",
            )
        if not envelope.get("ok") or status != 200:
            envelope.setdefault("error_code", status)
            raise TelegramError(method, envelope)
        result = envelope.get("result") or []
        return [(update, encode(update)) for update in result]

    def _post_poll(self, method: str, body: bytes, bound: float) -> tuple[int, bytes]:
        """POST on the long-poll connection: (HTTP status, body). A kept-alive connection
        the server has closed meanwhile is replaced once (getUpdates may be repeated)."""
        parts = urlsplit(self.base_url)
        path = f"{parts.path.rstrip('/')}/bot{self.bot.token}/{method}"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        for attempt in (1, 2):
            connection = self._poll_connection
            reused = connection is not None and connection.sock is not None
            if connection is None:
                factory = (
                    http.client.HTTPSConnection
                    if parts.scheme == "https"
                    else http.client.HTTPConnection
                )
                connection = factory(parts.hostname or "127.0.0.1", parts.port, timeout=bound)
                self._poll_connection = connection
            connection.timeout = bound
            if connection.sock is not None:
                connection.sock.settimeout(bound)
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                content = response.read()
            except TimeoutError:
                self._close_poll()
                raise BotApiTimeout(
                    method,
                    f"{method}: no answer from the Bot API at {self.base_url} within {bound:g} s",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._close_poll()
                stale = isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                )
                if reused and stale and attempt == 1:
                    continue
                raise BotApiUnavailable(
                    method,
                    f"{method}: cannot reach the Bot API at {self.base_url} "
                    f"({type(exc).__name__}: {redact(str(exc))[:200]})",
                ) from None
            if response.will_close:
                self._close_poll()
            return response.status, content
        raise AssertionError("unreachable")  # pragma: no cover

    def _close_poll(self) -> None:
        connection, self._poll_connection = self._poll_connection, None
        if connection is not None:
            connection.close()
