"""Telegram Bot API emulator: an offline stand-in for Telegram + the Local Bot API server.

Python 3.11 standard library only: Molecule installs it, built into one zipapp file, as the
``telegram-bot-api`` binary of a bare container, so the same systemd unit (and the same
command line) runs either this emulator or the real server. Tests run it as
``PYTHONPATH=tests python -m botapi_emulator [options]``; the zipapp is built with
``python3 -m zipapp <dir holding this package> -m 'botapi_emulator.__main__:main'``.

One module per concern:

- ``cli``: the real server's option set, parsed like td's ``OptionParser``, and ``--help``;
- ``tokens``: bot tokens checked as telegram-bot-api checks them, redaction for logs;
- ``logs``: logging to stderr or ``--log`` (token secrets redacted);
- ``formatting``: HTML / Markdown / MarkdownV2 into entities, auto-detected entities;
- ``chats``, ``bots``, ``limits``, ``faults``, ``stats``, ``uploads``: the state;
- ``persistence``: the append-only journal in ``--dir``, replayed and compacted on start-up;
- ``generator`` (with ``update_types``): realistic generated updates;
- ``emulator``: ``Emulator``, all state and the Bot API dispatch; ``methods`` names the Bot
  API methods, implemented in ``account``, ``polling``, ``sending``, ``files`` on top of
  ``messages`` (chats, parse modes, keyboards, replies, flood control) and ``params``;
- ``received``: files users send (injected media) and ``getFile``, which downloads them into
  the real server's per-bot directory layout with tdlib's file modes;
- ``control``: the control API (``/_emulator/...``);
- ``httpserver``: the asyncio HTTP/1.1 server (keep-alive, Content-Length and chunked bodies,
  query / urlencoded / JSON / multipart parameters);
- ``service``: listeners, faults that take the API listener down, signals (SIGTERM answers
  pending requests ``500 Internal Server Error: restart``), start-up; ``__main__``: ``main()``.

Emulator-only extensions: ``--control-port=N``, ``--bot TOKEN`` (repeatable), and the
environment variable ``EMULATOR_BOT_TOKENS`` (comma separated). Everything else behaves
like ``telegram-bot-api`` 10.0 as far as a Bot API client can tell. See
tests/emulator/README.md.
"""
