"""Bot API answers made fit for agents: no bot token in anything the gateway passes on.

Every answer of the Bot API that leaves the gateway -- the NATS replies of
``telegram.out.<bot>.<method>`` and the ``POST /send`` answers, Telegram's error descriptions
included -- comes out of :class:`~telegram_gateway.sender.Sender`, which hands each one to
:meth:`ReplyGuard.clean` right after the call. Two layers:

1. **getFile.** In ``--local`` mode telegram-bot-api answers ``getFile`` with the file's
   absolute path on its disk, inside the bot's own folder under its ``--dir``, and that folder
   is named after the token (``<dir>/<bot id>:<secret>/documents/file_3.pdf``, ``~`` instead of
   ``:`` where the file system refuses a colon; :func:`telegram_gateway.redact.bot_folder_names`).
   The guard replaces such a ``file_path`` with the part after the bot's folder
   (``documents/file_3.pdf``): exactly the path the server answers without ``--local``
   (``Client::json_store_file``: the path relative to the same folder), so a ``file_path`` has
   one shape in both modes, holds no secret, and still names the file for whoever knows the
   Bot API server's ``--dir`` and the token (the gateway). A relative path (non-local mode) and
   an absolute path outside the bot's folder (a file the bot sent from a local path) are kept
   as they are; the rest of the File object is never touched.
2. **Any secret anywhere.** Every answer's bytes are checked for the secret of every configured
   token (one ``bytes in`` per token: the secret is plain base64url, which JSON never escapes;
   it covers the ``<id>:<secret>`` and ``<id>~<secret>`` forms alike). On a hit -- never in normal
   operation; an agent would have to send a token itself -- every string is redacted with
   :func:`telegram_gateway.redact.redact` (keys and nested values included), the answer is
   re-encoded, the counter ``telegram_gateway_reply_redactions`` goes up and a warning names
   the bot and the method (never the secret). Should a secret survive that (it would have to
   be outside a JSON string), the answer is withheld and replaced by a 502 envelope.

The gateway itself may need the real path later (to read a received file); it gets it by
calling :class:`~telegram_gateway.botapi.BotApi` directly, never through the sender.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from telegram_gateway import metrics
from telegram_gateway.botapi import Reply
from telegram_gateway.config import BotConfig
from telegram_gateway.redact import bot_folder_names, redact, secret_of

logger = logging.getLogger(__name__)

WITHHELD: dict[str, Any] = {
    "ok": False,
    "error_code": 502,
    "description": "Bad Gateway: the Bot API's answer held a bot token and was withheld; "
    "see the gateway's log",
}


def relative_file_path(file_path: str, token: str) -> str:
    """``file_path`` of a getFile answer without the bot's token folder: the part after
    ``/<folder>/`` when the path runs through the bot's folder (``--local`` mode), otherwise
    ``file_path`` unchanged (relative paths of the non-local mode, other absolute paths)."""
    if not file_path.startswith("/"):
        return file_path
    for folder in bot_folder_names(token):
        marker = f"/{folder}/"
        at = file_path.find(marker)
        if at >= 0:
            rest = file_path[at + len(marker) :].lstrip("/")
            if rest:
                return rest
    return file_path


def redact_json(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (parsed JSON) with every string, keys included, passed through ``redact``."""
    found = tuple(secrets)

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            return redact(item, found)
        if isinstance(item, dict):
            return {clean(key): clean(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [clean(inner) for inner in item]
        return item

    return clean(value)


class ReplyGuard:
    """Cleans the Bot API's answers for the configured bots (see the module docstring)."""

    def __init__(self, bots: Iterable[BotConfig]) -> None:
        self.secrets: tuple[str, ...] = tuple(
            dict.fromkeys(secret for bot in bots if (secret := secret_of(bot.token)))
        )
        self._needles = tuple(secret.encode() for secret in self.secrets)

    def holds_secret(self, data: bytes) -> bool:
        """Whether ``data`` contains the secret of a configured token (the hot path)."""
        return any(needle in data for needle in self._needles)

    def clean(self, bot: BotConfig, method: str, reply: Reply) -> Reply:
        """``reply`` as it may leave the gateway: getFile's ``file_path`` relative to the
        bot's folder, no configured secret anywhere."""
        if method == "getFile" and reply.envelope.get("ok") is True:
            reply = _relative_get_file(reply, bot.token)
        if not self.holds_secret(reply.raw):
            return reply
        metrics.REPLY_REDACTIONS.labels(str(bot.bot_id), method).inc()
        logger.warning(
            "bot %s: the Bot API's answer to %s held a bot token's secret; redacted it before "
            "passing the answer on",
            bot.label,
            method,
        )
        envelope = redact_json(reply.envelope, self.secrets)
        raw = _encode(envelope)
        if self.holds_secret(raw):
            logger.error(
                "bot %s: a secret in the answer to %s was not in a JSON string; answered 502",
                bot.label,
                method,
            )
            envelope = dict(WITHHELD)
            raw = _encode(envelope)
        return replace(reply, envelope=envelope, raw=raw)


def _relative_get_file(reply: Reply, token: str) -> Reply:
    result = reply.envelope.get("result")
    if not isinstance(result, dict):
        return reply
    path = result.get("file_path")
    if not isinstance(path, str):
        return reply
    relative = relative_file_path(path, token)
    if relative == path:
        return reply
    envelope = dict(reply.envelope, result=dict(result, file_path=relative))
    return replace(reply, envelope=envelope, raw=_encode(envelope))


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
