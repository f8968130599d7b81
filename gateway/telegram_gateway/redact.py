"""Keep bot tokens and passwords out of every log line (and, through
:mod:`telegram_gateway.replies`, out of every Bot API answer the gateway passes on).

A bot token is ``<bot id>:<secret>``; the bot id is public, the secret is not. ``redact``
replaces the secret part wherever it appears (URLs such as ``/bot123:ABC.../getUpdates``,
exception texts, reprs), also in the form the Bot API server gives its per-bot folder where a
file system refuses ``:`` (``123~ABC...``, see :func:`bot_folder_names`). ``install`` puts the
redaction into the logging *record factory*, so it applies to every logger in the process
(ours, pyTelegramBotAPI's, urllib3's, requests', gunicorn's) before any handler or formatter
sees the record, tracebacks included. Known secrets (e.g. the NATS password) can be registered
to be masked as well, or passed to one call.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable

#: a token ``<bot id>:<secret>``, or the server's folder name for it ``<bot id>~<secret>``
TOKEN_IN_TEXT = re.compile(r"(?<![0-9])([0-9]{1,20})([:~])[A-Za-z0-9_-]{24,}")
REDACTED = "<redacted>"

_extra_secrets: set[str] = set()
_installed = False


def add_secrets(secrets: Iterable[str | None]) -> None:
    """Mask these exact strings too (passwords, API tokens); short ones are ignored."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            _extra_secrets.add(secret)


def secret_of(token: str) -> str:
    """The secret part of a bot token (after the first ``:``); empty when there is none."""
    return token.partition(":")[2]


def bot_folder_names(token: str) -> tuple[str, ...]:
    """The names the Bot API server may give the bot's folder under its ``--dir``.

    telegram-bot-api (``Client.cpp``) names it after the token, ``:T`` appended for the test
    DC, with every ``:`` turned into ``~`` only when the file system refuses a ``:`` in a name
    (the start-up probe ``mkdtemp(dir, "1:a")`` failed) -- so on Linux it is usually the token
    itself, ``<bot id>:<secret>``, and ``<bot id>~<secret>`` elsewhere.
    """
    names: list[str] = []
    for suffix in ("", ":T"):
        name = token + suffix
        names += [name, name.replace(":", "~")]
    return tuple(names)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every bot token secret, every registered secret and ``secrets`` masked."""
    text = TOKEN_IN_TEXT.sub(rf"\1\2{REDACTED}", text)
    for secret in (*_extra_secrets, *secrets):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep the raw parts, redacted
        message = f"{record.msg} {record.args}"
    cleaned = redact(message)
    if cleaned != message or record.args:
        record.msg = cleaned
        record.args = None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install() -> None:
    """Wrap the process-wide log record factory once; safe to call repeatedly."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
