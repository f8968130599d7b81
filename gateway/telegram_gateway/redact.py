"""Keep bot tokens and passwords out of every log line.

A bot token is ``<bot id>:<secret>``; the bot id is public, the secret is not. ``redact``
replaces the secret part wherever it appears (URLs such as ``/bot123:ABC.../getUpdates``,
exception texts, reprs). ``install`` puts the redaction into the logging *record factory*,
so it applies to every logger in the process (ours, pyTelegramBotAPI's, urllib3's, requests',
gunicorn's) before any handler or formatter sees the record, tracebacks included.
Known secrets (e.g. the NATS password) can be registered to be masked as well.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable

TOKEN_IN_TEXT = re.compile(r"(?<![0-9])([0-9]{1,20}):[A-Za-z0-9_-]{24,}")
REDACTED = "<redacted>"

_extra_secrets: set[str] = set()
_installed = False


def add_secrets(secrets: Iterable[str | None]) -> None:
    """Mask these exact strings too (passwords, API tokens); short ones are ignored."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            _extra_secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with every bot token secret and every registered secret masked."""
    text = TOKEN_IN_TEXT.sub(rf"\1:{REDACTED}", text)
    for secret in _extra_secrets:
        if secret in text:
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
