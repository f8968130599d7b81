"""The gateway's one Bot API client: raw JSON in, raw JSON out, typed errors.

:class:`BotApi` (one per worker process) POSTs ``/bot<token>/<method>`` to the Bot API server
(``TELEGRAM_API_URL``) over one urllib3 connection pool, kept alive and shared by all greenlets
of the worker (urllib3 is cooperative under gevent's monkey-patching). :class:`BotApiClient`
is one bot's view of it: the poller's ``getUpdates`` and the health probe's ``getMe``. The
sender posts through :meth:`BotApi.post` with the token of the bot it sends for.

Parameters go as a JSON body; a file uploaded to ``/send`` goes as ``multipart/form-data``
built by requests-toolbelt's ``MultipartEncoder``, which reads the file as urllib3 sends it
(never the whole file in memory, up to the local server's 2000 MB).

Answers are not re-serialised: :class:`Reply` keeps the Bot API's bytes next to the parsed
envelope (a NATS reply is those bytes), and :meth:`BotApiClient.get_updates_raw` splits the
``result`` array of ``getUpdates`` itself so that every Update's JSON is published exactly as
served, fields unknown to anyone included (:func:`split_result_array`).

Why urllib3 and not pyTelegramBotAPI's HTTP layer (``apihelper._make_request``, requests
underneath): it returns only the parsed ``result`` (the bytes above are lost), sends every
parameter in the URL's query string, builds an upload in memory (``files=``) and patches
urllib3's multipart header formatting process-wide, and formats every whole answer for a
debug log line on every call. And not requests itself: measured against the emulator, a
requests ``Session.post`` costs about 550 us of CPU, urllib3's ``urlopen`` 230 us (the
sender's and the poller's hot paths); requests is the same urllib3 pool plus session
machinery the gateway does not use (cookies, proxies from the environment, redirects, hooks).

What the caller gets, because the gateway's promises depend on it:

* a Bot API answer, ``ok`` true or false -- :meth:`BotApi.post` returns it as a :class:`Reply`
  (:meth:`BotApiClient.call` raises :class:`TelegramError` for ``ok: false``);
* :class:`BotApiUnreachable` -- no connection could be made (refused, unreachable, connect
  timeout): the request was certainly not sent, a retry is safe;
* :class:`BotApiUnavailable` -- the connection broke after the request went out, or the answer
  is not a Bot API envelope: Telegram may have acted on it;
* :class:`BotApiTimeout` -- no complete answer within the bound. Under gevent the whole call is
  also bounded by a ``gevent.Timeout``, so a server that trickles bytes cannot hold a greenlet
  past it (urllib3's own timeouts bound each socket operation, not the call).

Nothing is retried here (``retries=False``): a send must not be repeated behind the sender's
back; only ``getUpdates``, which may be repeated, is tried once more when its connection broke.
No error message contains the token (the URL holds it; messages name ``TELEGRAM_API_URL``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from requests_toolbelt.multipart.encoder import MultipartEncoder
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

from telegram_gateway.config import BotConfig
from telegram_gateway.errors import (
    BotApiTimeout,
    BotApiUnavailable,
    BotApiUnreachable,
    TelegramError,
)
from telegram_gateway.outbound import Upload
from telegram_gateway.redact import redact
from telegram_gateway.updates import encode

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the (local) Bot API server
POOL_SIZE = 256  # kept-alive connections per worker process

RawUpdate = tuple[Any, bytes]


@dataclass(frozen=True)
class Reply:
    """One Bot API answer: its envelope, the bytes it came as, and the HTTP status."""

    envelope: dict[str, Any]
    raw: bytes
    status: int = 200


class _Expired(Exception):
    """The overall bound of a call passed (gevent's timer)."""


class BotApi:
    """POSTs to one Bot API server over one keep-alive connection pool. Thread- and
    greenlet-safe; one per worker process."""

    def __init__(self, base_url: str, pool_size: int = POOL_SIZE) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"TELEGRAM_API_URL is not an http(s) URL: {base_url}")
        self.base_url = base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._pool = urllib3.connection_from_url(self.base_url, maxsize=pool_size)
        # called with (bot id, method) before every request: a request launches the server's
        # instance of the bot, which the gateway records first (telegram_gateway.instances)
        self.before: Callable[[int, str], None] | None = None

    def close(self) -> None:
        self._pool.close()

    def post(
        self,
        token: str,
        method: str,
        params: Mapping[str, Any],
        upload: Upload | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        """The Bot API's answer (``ok`` true or false); raises a ``BotApiError`` subclass for
        everything that is not an answer (see the module docstring)."""
        status, raw = self.exchange(token, method, params, upload, timeout)
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            raise self.not_the_bot_api(method, status)
        return Reply(envelope, raw, status)

    def exchange(
        self,
        token: str,
        method: str,
        params: Mapping[str, Any],
        upload: Upload | None,
        timeout: float,
    ) -> tuple[int, bytes]:
        """One POST: (HTTP status, body bytes), whatever they are."""
        if self.before is not None:
            bot_id, _, _ = token.partition(":")
            if bot_id.isdigit():
                self.before(int(bot_id), method)
        body: Any
        if upload is None:
            body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"}
        else:
            body = _multipart(params, upload)
            headers = {"Content-Type": body.content_type, "Content-Length": str(body.len)}
        try:
            with _bounded(timeout):
                response = self._pool.urlopen(
                    "POST",
                    f"{self._prefix}/bot{token}/{method}",
                    body=body,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout), read=timeout),
                    retries=False,  # a send is not repeated behind the sender's back
                    redirect=False,
                )
        except (_Expired, ReadTimeoutError):
            raise self.timed_out(method, timeout) from None
        except NewConnectionError as exc:  # refused, unreachable: nothing was sent
            raise BotApiUnreachable(
                method,
                f"{method}: cannot connect to the Bot API at {self.base_url} ({_reason(exc)})",
            ) from None
        except ConnectTimeoutError:
            raise BotApiUnreachable(
                method, f"{method}: connecting to the Bot API at {self.base_url} timed out"
            ) from None
        except HTTPError as exc:  # broken after the request went out, a garbled answer, ...
            raise self.broke(method, exc) from None
        return response.status, response.data

    def timed_out(self, method: str, timeout: float) -> BotApiTimeout:
        return BotApiTimeout(
            method,
            f"{method}: no answer from the Bot API within {timeout:g} s "
            f"(TELEGRAM_API_URL {self.base_url})",
        )

    def broke(self, method: str, exc: Exception) -> BotApiUnavailable:
        return BotApiUnavailable(
            method,
            f"{method}: the connection to the Bot API at {self.base_url} broke "
            f"({_reason(exc)}); Telegram may have got the request",
        )

    def not_the_bot_api(self, method: str, status: int) -> BotApiUnavailable:
        return BotApiUnavailable(
            method,
            f"{method}: the Bot API answered HTTP {status} without a Bot API envelope; "
            "is TELEGRAM_API_URL a Bot API server?",
        )


class BotApiClient:
    """One bot's calls on the shared :class:`BotApi`: the poller's and the health probe's."""

    def __init__(self, api: BotApi, bot: BotConfig, timeout: float) -> None:
        self.api = api
        self.bot = bot
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BotApiClient(bot_id={self.bot.bot_id}, base_url={self.api.base_url!r})"

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """``result`` of the Bot API method; raises a :class:`BotApiError` subclass otherwise
        (:class:`TelegramError` for ``ok: false``)."""
        bound = timeout if timeout is not None else self.timeout
        reply = self.api.post(self.bot.token, method, params or {}, None, bound)
        if reply.envelope.get("ok") is not True:
            raise TelegramError(method, _with_code(reply.envelope, reply.status))
        return reply.envelope.get("result")

    def get_me(self, timeout: float | None = None) -> dict[str, Any]:
        return dict(self.call("getMe", timeout=timeout))

    def get_updates_raw(
        self,
        offset: int | None,
        limit: int,
        poll_timeout: int,
        allowed_updates: list[str] | None = None,
    ) -> list[RawUpdate]:
        """One long poll (the bound is the poll timeout plus the client's timeout); every
        Update as ``(parsed JSON, its exact bytes as served)``. Errors as :meth:`call` raises
        them. getUpdates may be repeated, so a connection that broke is tried once more."""
        method = "getUpdates"
        params: dict[str, Any] = {"limit": limit, "timeout": poll_timeout}
        if offset is not None:
            params["offset"] = offset
        if allowed_updates is not None:
            params["allowed_updates"] = allowed_updates
        bound = poll_timeout + self.timeout
        try:
            status, content = self.api.exchange(self.bot.token, method, params, None, bound)
        except BotApiUnreachable:
            raise
        except BotApiUnavailable:
            status, content = self.api.exchange(self.bot.token, method, params, None, bound)
        text = content.decode("utf-8", errors="replace")
        if status == 200:
            items = split_result_array(text)
            if items is not None:
                return items
        try:
            envelope = json.loads(text)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            raise self.api.not_the_bot_api(method, status)
        if envelope.get("ok") is not True or status != 200:
            raise TelegramError(method, _with_code(envelope, status))
        result = envelope.get("result") or []
        return [(update, encode(update)) for update in result]


# ---- getUpdates' result array, element by element, as served ---------------------------------
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_RESULT_ARRAY = re.compile(
    r'[ \t\n\r]*\{[ \t\n\r]*"ok"[ \t\n\r]*:[ \t\n\r]*true[ \t\n\r]*,'
    r'[ \t\n\r]*"result"[ \t\n\r]*:[ \t\n\r]*\['
)
_END = re.compile(r"[ \t\n\r]*\}[ \t\n\r]*\Z")


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


# ---- helpers ----------------------------------------------------------------------------------
def _multipart(params: Mapping[str, Any], upload: Upload) -> MultipartEncoder:
    """Parameters as form fields (objects and arrays as JSON text) and the file, read from
    its current position as the body is sent."""
    fields: list[tuple[str, Any]] = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        fields.append((name, text))
    fields.append((upload.field, (upload.filename, upload.stream, upload.content_type)))
    return MultipartEncoder(fields)


def _with_code(envelope: dict[str, Any], status: int) -> dict[str, Any]:
    if "error_code" in envelope:
        return envelope
    return dict(envelope, error_code=status if status != 200 else 500)


def _reason(exc: BaseException) -> str:
    """What went wrong underneath, token redacted."""
    inner = exc.args[-1] if exc.args and isinstance(exc.args[-1], BaseException) else exc
    return f"{type(inner).__name__}: {redact(str(inner))[:200]}"


class _bounded:
    """``gevent.Timeout`` (raising :class:`_Expired`) around a block when gevent has patched
    the process; otherwise nothing (requests' timeouts still bound each read and write)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.timeout: Any = None

    def __enter__(self) -> None:
        if _gevent_active():
            import gevent

            self.timeout = gevent.Timeout(self.seconds, _Expired)
            self.timeout.start()

    def __exit__(self, *exc: object) -> None:
        if self.timeout is not None:
            self.timeout.close()


_GEVENT: bool | None = None


def _gevent_active() -> bool:
    global _GEVENT
    if _GEVENT is None:
        try:
            from gevent import monkey

            _GEVENT = bool(monkey.is_module_patched("socket"))
        except ImportError:  # pragma: no cover - gevent is a runtime dependency
            _GEVENT = False
    return _GEVENT
