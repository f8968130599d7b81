"""``python -m botapi_emulator``: parse the command line, set up, serve."""

from __future__ import annotations

import asyncio
import os
import sys

from botapi_emulator.cli import parse_command_line, usage_text
from botapi_emulator.constants import API_VERSION
from botapi_emulator.logs import setup_logging
from botapi_emulator.service import StartupError, prepare_environment, serve, start_tokens


def program_name() -> str:
    """argv[0] as the real server shows it in its usage text (``-m`` runs show the module)."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else "telegram-bot-api"
    return "python -m botapi_emulator" if program.endswith("__main__.py") else program


def main(argv: list[str] | None = None) -> int:
    program = program_name()
    env = dict(os.environ)
    opts, error = parse_command_line(sys.argv[1:] if argv is None else argv, env)
    if opts.help:
        sys.stderr.write(usage_text(program))
        return 0
    if opts.version:
        sys.stderr.write(f"Bot API {API_VERSION}\n")
        return 0
    if error:
        sys.stderr.write(f"{program}: {error}\n{usage_text(program)}")
        return 1
    try:
        workdir, temp_dir = prepare_environment(opts)
        setup_logging(opts)
    except StartupError as exc:
        sys.stderr.write(f"{exc}\n{usage_text(program)}")
        return 1
    except OSError as exc:
        sys.stderr.write(f"Can't open log file: {exc}\n{usage_text(program)}")
        return 1
    try:
        return asyncio.run(serve(opts, workdir, temp_dir, start_tokens(opts, env)))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
