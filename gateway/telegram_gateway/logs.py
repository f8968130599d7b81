"""Logging set-up: one format, the configured level, token redaction installed first."""

from __future__ import annotations

import logging
import sys

from telegram_gateway import redact

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure(level: str, secrets: list[str | None] | None = None) -> None:
    """Install redaction, then a stderr handler on the root logger (journald captures it)."""
    redact.install()
    redact.add_secrets(secrets or [])
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_gateway", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._gateway = True  # type: ignore[attr-defined]
        root.addHandler(handler)
