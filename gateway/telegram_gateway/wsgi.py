"""WSGI entry point for gunicorn: ``telegram_gateway.wsgi:app``.

Settings come from the environment; a missing or malformed one stops the worker with one
line naming it (gunicorn then exits, and systemd shows that line in the journal).
"""

from __future__ import annotations

import sys

from telegram_gateway.app import create_app
from telegram_gateway.errors import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"telegram-gateway: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
