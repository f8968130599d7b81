"""Logging to stderr or ``--log``; the formatter redacts every token-shaped string."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from botapi_emulator.cli import Options
from botapi_emulator.tokens import redact_text

log = logging.getLogger("botapi-emulator")


class RedactingFormatter(logging.Formatter):
    """td-like log lines; any token-shaped text becomes ``<id>:<redacted>``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


VERBOSITY_LEVELS = {
    0: logging.CRITICAL,
    1: logging.ERROR,
    2: logging.WARNING,
    3: logging.INFO,
}


def setup_logging(opts: Options) -> None:
    """stderr, or ``--log`` (rotated to ``<log>.old`` past ``--log-max-file-size``)."""
    handler: logging.Handler
    if opts.log:
        rotating = logging.handlers.RotatingFileHandler(
            opts.log, maxBytes=max(opts.log_max_file_size, 0), backupCount=1, encoding="utf-8"
        )
        rotating.namer = lambda name: name[: -len(".1")] + ".old" if name.endswith(".1") else name
        handler = rotating
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(
            "[%(levelname).1s][%(asctime)s.%(msecs)03d][emulator] %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S",
        )
    )
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(VERBOSITY_LEVELS.get(opts.verbosity, logging.DEBUG))
