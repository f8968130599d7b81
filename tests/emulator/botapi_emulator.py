#!/usr/bin/env python3
"""Telegram Bot API emulator: an offline stand-in for Telegram + the Local Bot API server.

One executable file, Python 3.11 standard library only: it runs in a bare container where it
is installed as the ``telegram-bot-api`` binary, so the same systemd unit (and the same
command line) runs either this emulator or the real server.

How the file reads, top to bottom:

1. constants and small helpers (JSON, tokens, UTF-16 lengths);
2. the command line: the real server's option set, parsed like td's ``OptionParser``
   (``--opt=value``, ``--opt value``, ``-p 8081``, ``-p8081``), and its ``--help`` text;
3. logging: to stderr or ``--log``; a formatter that redacts every token-shaped string;
4. text formatting: HTML / Markdown / MarkdownV2 parsing into entities, auto-detected
   entities (commands, mentions, URLs), keyboards;
5. state: ``ChatState``, ``BotState`` (update queue as pre-serialised JSON bytes, chats,
   message ids, flood-control windows), ``Limits``, ``Fault``;
6. ``Journal``: the append-only persistence file in ``--dir`` (compacted on start-up);
7. ``UpdateGenerator``: realistic generated updates (with optional unknown fields);
8. ``Emulator``: the Bot API methods and the control API (``/_emulator/...``);
9. HTTP: a hand-written asyncio HTTP/1.1 server (keep-alive, Content-Length and chunked
   bodies, query / urlencoded / JSON / multipart parameters);
10. ``Service``: listeners (API, stats, control), faults that take the API listener down,
    signals (SIGTERM answers pending requests ``500 Internal Server Error: restart``),
    and ``main()``.

Emulator-only extensions: ``--control-port=N``, ``--bot TOKEN`` (repeatable), and the
environment variable ``EMULATOR_BOT_TOKENS`` (comma separated). Everything else behaves
like ``telegram-bot-api`` 10.0 as far as a Bot API client can tell. See README.md.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import html
import json
import json.encoder
import logging
import logging.handlers
import math
import mimetypes
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------
# 1. constants and small helpers
# --------------------------------------------------------------------------------------

API_VERSION = "10.0"
EMULATOR_VERSION = "1.0"
JOURNAL_NAME = "botapi-emulator.journal"
MAX_HEADER_BYTES = 64 * 1024
UPLOAD_LIMIT_LOCAL = 2000 * 1024 * 1024
UPLOAD_LIMIT_REMOTE = 50 * 1024 * 1024
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
FLOOD_TOLERANCE = 0.05  # seconds: clients pace by their own clock
MAX_BOT_ID = 1 << 54

KNOWN_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
KNOWN_UPDATE_TYPE_SET = frozenset(KNOWN_UPDATE_TYPES)
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

TOKEN_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{24,}")
FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{20,}")
TOKEN_IN_TEXT_RE = re.compile(r"(\d{3,}):[A-Za-z0-9_-]{20,}")

CONFLICT_OTHER_POLLER = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
CONFLICT_SET_WEBHOOK = "Conflict: terminated by setWebhook request"
RESTART_DESCRIPTION = "Internal Server Error: restart"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"

HTTP_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

log = logging.getLogger("botapi-emulator")


def _not_serialisable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:  # the C encoder, built once: json.dumps() builds one per call
    _C_ENCODER: Callable[[Any, int], Any] | None = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _not_serialisable,
        json.encoder.c_encode_basestring,  # type: ignore[attr-defined]
        None,
        ":",
        ",",
        False,
        False,
        True,
    )
except (AttributeError, TypeError):  # pragma: no cover - pure-Python json
    _C_ENCODER = None


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as the real server writes it (non-ASCII as UTF-8)."""
    if _C_ENCODER is not None and isinstance(obj, dict | list):
        return "".join(_C_ENCODER(obj, 0)).encode("utf-8")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (what entity offsets count)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def now_unix() -> int:
    return int(time.time())


def safe_bot_ref(bot_id: int) -> str:
    """How a bot appears in logs: never the secret part of its token."""
    return f"bot{bot_id}:<redacted>"


class TokenError(Exception):
    """A token the real server refuses before it ever talks to Telegram."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def parse_token(token: str, filter_rem: int = 0, filter_mod: int = 1) -> int:
    """Validate a bot token like telegram-bot-api does; return the bot id.

    Rules (ClientManager::send): empty, leading '0', longer than 80, containing '/' or no
    ':' -> 401 invalid token; id not an integer or outside ``--filter`` -> 421; id <= 0 or
    >= 2**54 -> 401 invalid token; secret not >= 24 base64url chars -> 401 Unauthorized
    (Telegram refuses it).
    """
    if not token or token[0] == "0" or len(token) > 80 or "/" in token or ":" not in token:
        raise TokenError(401, "Unauthorized: invalid token specified")
    id_part, _, secret = token.partition(":")
    if not re.fullmatch(r"-?\d{1,19}", id_part):
        raise TokenError(421, "Misdirected Request: unallowed token specified")
    bot_id = int(id_part)
    if filter_mod > 1 and bot_id % filter_mod != filter_rem:
        raise TokenError(421, "Misdirected Request: unallowed token specified")
    if bot_id <= 0 or bot_id >= MAX_BOT_ID:
        raise TokenError(401, "Unauthorized: invalid token specified")
    if not TOKEN_SECRET_RE.fullmatch(secret):
        raise TokenError(401, "Unauthorized")
    return bot_id


def token_bot_id(token: str) -> int | None:
    """The bot id a token claims (for fault matching), or None."""
    id_part = token.partition(":")[0]
    return int(id_part) if id_part.isdigit() and len(id_part) < 19 else None


def redact_text(text: str) -> str:
    return TOKEN_IN_TEXT_RE.sub(lambda m: f"{m.group(1)}:<redacted>", text)


def is_loopback(host: str) -> bool:
    if host.startswith("::ffff:"):
        host = host[7:]
    return host.startswith("127.") or host == "::1" or host == "localhost"


def update_type_of(update: dict[str, Any]) -> str:
    """The Update's type: its first known update field, else its first other field."""
    other = ""
    for key in update:
        if key == "update_id":
            continue
        if key in KNOWN_UPDATE_TYPE_SET:
            return key
        if not other:
            other = key
    return other or "unknown"


# --------------------------------------------------------------------------------------
# 2. the command line (same option set as telegram-bot-api 10.0)
# --------------------------------------------------------------------------------------


class OptionError(Exception):
    """A command-line problem: printed with the usage text, exit code 1."""


@dataclass
class Options:
    help: bool = False
    version: bool = False
    local: bool = False
    api_id: int = 0
    api_hash: str = ""
    http_port: int = 8081
    http_stat_port: int = 0
    dir: str = "."
    temp_dir: str = ""
    filter_rem: int = 0
    filter_mod: int = 1
    max_webhook_connections: int = 0
    http_ip_address: str = "0.0.0.0"
    http_stat_ip_address: str = "0.0.0.0"
    log: str = ""
    verbosity: int = 0
    memory_verbosity: int = 3
    log_max_file_size: int = 2000000000
    username: str = ""
    groupname: str = ""
    max_connections: int = 0
    cpu_affinity: int = 0
    main_thread_affinity: int = 0
    proxy: str = ""
    control_port: int = 0
    bots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OptionSpec:
    short: str
    long: str
    takes_arg: bool
    description: str
    apply: Callable[[Options, str], None]
    emulator_only: bool = False


def _parse_int(value: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", value.strip()):
        raise OptionError(f'Can\'t parse "{value}" as number')
    return int(value)


def _int_option(attr: str) -> Callable[[Options, str], None]:
    def apply(opts: Options, value: str) -> None:
        setattr(opts, attr, _parse_int(value))

    return apply


def _str_option(attr: str) -> Callable[[Options, str], None]:
    def apply(opts: Options, value: str) -> None:
        setattr(opts, attr, value)

    return apply


def _flag_option(attr: str) -> Callable[[Options, str], None]:
    def apply(opts: Options, value: str) -> None:
        setattr(opts, attr, True)

    return apply


def _apply_filter(opts: Options, value: str) -> None:
    rem, _, mod = value.partition("/")
    if not rem.isdigit() or not mod.isdigit():
        raise OptionError(f'Can\'t parse "{value}" as number')
    if int(rem) >= int(mod):
        raise OptionError("Wrong argument specified: ensure that remainder < modulo")
    opts.filter_rem, opts.filter_mod = int(rem), int(mod)


def _ip_option(attr: str) -> Callable[[Options, str], None]:
    def apply(opts: Options, value: str) -> None:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
        except OSError:
            raise OptionError(f'Invalid IP address "{value}" specified') from None
        setattr(opts, attr, value)

    return apply


def _apply_proxy(opts: Options, value: str) -> None:
    address = re.sub(r"^https?://", "", value)
    if ":" not in address:
        raise OptionError(f'Invalid proxy address "{value}" specified')
    opts.proxy = value


def _apply_bot(opts: Options, value: str) -> None:
    opts.bots.append(value)


API_ID_HELP = (
    "application identifier for Telegram API access, which can be obtained at "
    "https://my.telegram.org (defaults to the value of the TELEGRAM_API_ID environment variable)"
)
API_HASH_HELP = (
    "application identifier hash for Telegram API access, which can be obtained at "
    "https://my.telegram.org (defaults to the value of the TELEGRAM_API_HASH environment "
    "variable)"
)

OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("h", "help", False, "display this help text and exit", _flag_option("help")),
    OptionSpec("", "version", False, "display version number and exit", _flag_option("version")),
    OptionSpec(
        "",
        "local",
        False,
        "allow the Bot API server to serve local requests",
        _flag_option("local"),
    ),
    OptionSpec("", "api-id", True, API_ID_HELP, _int_option("api_id")),
    OptionSpec("", "api-hash", True, API_HASH_HELP, _str_option("api_hash")),
    OptionSpec(
        "p", "http-port", True, "HTTP listening port (default is 8081)", _int_option("http_port")
    ),
    OptionSpec("s", "http-stat-port", True, "HTTP statistics port", _int_option("http_stat_port")),
    OptionSpec("d", "dir", True, "server working directory", _str_option("dir")),
    OptionSpec(
        "t",
        "temp-dir",
        True,
        "directory for storing HTTP server temporary files",
        _str_option("temp_dir"),
    ),
    OptionSpec(
        "",
        "filter",
        True,
        "\"<remainder>/<modulo>\". Allow only bots with 'bot_user_id % modulo == remainder'",
        _apply_filter,
    ),
    OptionSpec(
        "",
        "max-webhook-connections",
        True,
        "default value of the maximum webhook connections per bot",
        _int_option("max_webhook_connections"),
    ),
    OptionSpec(
        "",
        "http-ip-address",
        True,
        "local IP address, HTTP connections to which will be accepted. By default, connections "
        "to any local IPv4 address are accepted",
        _ip_option("http_ip_address"),
    ),
    OptionSpec(
        "",
        "http-stat-ip-address",
        True,
        "local IP address, HTTP statistics connections to which will be accepted. By default, "
        "statistics connections to any local IPv4 address are accepted",
        _ip_option("http_stat_ip_address"),
    ),
    OptionSpec(
        "l", "log", True, "path to the file where the log will be written", _str_option("log")
    ),
    OptionSpec("v", "verbosity", True, "log verbosity level", _int_option("verbosity")),
    OptionSpec(
        "",
        "memory-verbosity",
        True,
        "memory log verbosity level; defaults to 3",
        _int_option("memory_verbosity"),
    ),
    OptionSpec(
        "",
        "log-max-file-size",
        True,
        "maximum size of the log file in bytes before it will be auto-rotated "
        "(default is 2000000000)",
        _int_option("log_max_file_size"),
    ),
    OptionSpec("u", "username", True, "effective user name to switch to", _str_option("username")),
    OptionSpec(
        "g", "groupname", True, "effective group name to switch to", _str_option("groupname")
    ),
    OptionSpec(
        "c",
        "max-connections",
        True,
        "maximum number of open file descriptors",
        _int_option("max_connections"),
    ),
    OptionSpec(
        "",
        "cpu-affinity",
        True,
        "CPU affinity as 64-bit mask (defaults to all available CPUs)",
        _int_option("cpu_affinity"),
    ),
    OptionSpec(
        "",
        "main-thread-affinity",
        True,
        "CPU affinity of the main thread as 64-bit mask (defaults to the value of the option "
        "--cpu-affinity)",
        _int_option("main_thread_affinity"),
    ),
    OptionSpec(
        "",
        "proxy",
        True,
        "HTTP proxy server for outgoing webhook requests in the format http://host:port",
        _apply_proxy,
    ),
    OptionSpec(
        "",
        "control-port",
        True,
        "[emulator] serve the control API on 127.0.0.1:<arg> as well (0 = only under "
        "/_emulator/ on the HTTP port)",
        _int_option("control_port"),
        emulator_only=True,
    ),
    OptionSpec(
        "",
        "bot",
        True,
        "[emulator] register the bot with this token at start-up (repeatable; see also the "
        "EMULATOR_BOT_TOKENS environment variable)",
        _apply_bot,
        emulator_only=True,
    ),
)


def usage_text(program: str = "telegram-bot-api") -> str:
    """The ``--help`` text, laid out like td's OptionParser."""
    name = os.path.basename(program) or "telegram-bot-api"
    lines = [
        f"Usage: {name} --api-id=<arg> --api-hash=<arg> [--local] [OPTION]...",
        "",
        "Telegram Bot API server (offline emulator). Options:",
    ]
    width = max(2 + 4 + len(s.long) + (6 if s.takes_arg else 0) for s in OPTION_SPECS) + 1
    for spec in OPTION_SPECS:
        head = f"-{spec.short}" if spec.short else "  "
        head += (", " if spec.short else "  ") + f"--{spec.long}"
        if spec.takes_arg:
            head += "=<arg>"
        lines.append("  " + head.ljust(width + 2) + spec.description)
    lines.append("")
    lines.append("Emulator-only: options marked [emulator], environment EMULATOR_BOT_TOKENS")
    lines.append("(comma-separated tokens registered at start-up); control API under /_emulator/.")
    return "\n".join(lines) + "\n"


def _env_api_id(env: dict[str, str]) -> int:
    match = re.match(r"\s*[+-]?\d+", env.get("TELEGRAM_API_ID", ""))
    return int(match.group(0)) if match else 0


def parse_command_line(argv: list[str], env: dict[str, str]) -> tuple[Options, str | None]:
    """Parse like td's OptionParser; return (options, first error or None).

    As in the real server, ``--help``/``--version`` win over errors found later.
    """
    opts = Options(api_id=_env_api_id(env), api_hash=env.get("TELEGRAM_API_HASH", ""))
    by_long = {s.long: s for s in OPTION_SPECS}
    by_short = {s.short: s for s in OPTION_SPECS if s.short}
    try:
        _parse_arguments(argv, opts, by_long, by_short)
        _check_options(opts)
    except OptionError as exc:
        return opts, str(exc)
    return opts, None


def _parse_arguments(
    argv: list[str],
    opts: Options,
    by_long: dict[str, OptionSpec],
    by_short: dict[str, OptionSpec],
) -> None:
    pos = 0
    non_options: list[str] = []
    while pos < len(argv):
        arg = argv[pos]
        pos += 1
        if not arg.startswith("-") or arg == "-":
            non_options.append(arg)
            continue
        if arg == "--":
            non_options.extend(argv[pos:])
            break
        if arg.startswith("--"):
            name, has_equal, value = arg[2:].partition("=")
            spec = by_long.get(name)
            if spec is None:
                raise OptionError(f'Option "{name}" is unrecognized')
            if not spec.takes_arg and has_equal:
                raise OptionError(f'Option "{name}" must not have an argument')
            if spec.takes_arg and not has_equal:
                if pos >= len(argv):
                    raise OptionError(f'Option "{name}" requires an argument')
                value = argv[pos]
                pos += 1
            spec.apply(opts, value)
            continue
        pos = _parse_short_group(arg, argv, pos, opts, by_short)
    if non_options:
        raise OptionError("Unexpected non-option parameters specified")


def _parse_short_group(
    arg: str, argv: list[str], pos: int, opts: Options, by_short: dict[str, OptionSpec]
) -> int:
    index = 1
    while index < len(arg):
        spec = by_short.get(arg[index])
        if spec is None:
            raise OptionError(f'Option "{arg[index]}" is unrecognized')
        if not spec.takes_arg:
            spec.apply(opts, "")
            index += 1
            continue
        if index + 1 < len(arg):
            spec.apply(opts, arg[index + 1 :])
        else:
            if pos >= len(argv):
                raise OptionError(f'Option "{arg[index]}" requires an argument')
            spec.apply(opts, argv[pos])
            pos += 1
        break
    return pos


def _check_options(opts: Options) -> None:
    if opts.api_id <= 0 or not opts.api_hash:
        raise OptionError(
            "You must provide valid api-id and api-hash obtained at https://my.telegram.org"
        )
    if opts.verbosity < 0:
        raise OptionError("Wrong verbosity level specified")
    if opts.memory_verbosity < 0:
        raise OptionError("Wrong memory verbosity level specified")
    for port in (opts.http_port, opts.http_stat_port, opts.control_port):
        if not 0 <= port <= 65535:
            raise OptionError(f"Wrong port number {port} specified")


# --------------------------------------------------------------------------------------
# 3. logging (never a token's secret part)
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# 4. text formatting: parse modes, auto-detected entities, keyboards
# --------------------------------------------------------------------------------------


class EntityParseError(Exception):
    """Becomes 400 "Bad Request: can't parse entities: <message>"."""


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class _EntityBuilder:
    """Collects plain text and entities (offsets in UTF-16 code units)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length16 = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, chunk: str) -> None:
        if chunk:
            self.parts.append(chunk)
            self.length16 += utf16_len(chunk)

    def entity(self, kind: str, start16: int, **extra: Any) -> None:
        length = self.length16 - start16
        if length > 0:
            self.entities.append({"offset": start16, "length": length, "type": kind, **extra})

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), entities


HTML_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
HTML_ENTITY_RE = re.compile(r"&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|lt|gt|amp|quot);")
HTML_ATTR_RE = re.compile(
    r"([A-Za-z_:][-A-Za-z0-9_:.]*)\s*(?:=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?"
)


@dataclass
class _OpenTag:
    name: str
    start16: int
    attrs: dict[str, str]
    language: str = ""


def _decode_html_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name.startswith(("#x", "#X")):
        return chr(min(int(name[2:], 16), 0x10FFFF))
    if name.startswith("#"):
        return chr(min(int(name[1:]), 0x10FFFF))
    return {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}[name]


def _parse_html_tag(inner: str) -> tuple[str, dict[str, str]]:
    name_match = re.match(r"\s*([A-Za-z][-A-Za-z0-9]*)", inner)
    name = name_match.group(1).lower() if name_match else inner.strip().lower()
    attrs: dict[str, str] = {}
    rest = inner[name_match.end() :] if name_match else ""
    for attr in HTML_ATTR_RE.finditer(rest):
        value = attr.group(2) or ""
        if value[:1] in "\"'":
            value = value[1:-1]
        attrs[attr.group(1).lower()] = html.unescape(value)
    return name, attrs


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: supported tags only, &lt; &gt; &amp; &quot; &#N;."""
    out = _EntityBuilder()
    stack: list[_OpenTag] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "<&":
            j += 1
        out.add(text[i:j])
        i = j
        if i >= n:
            break
        if text[i] == "&":
            match = HTML_ENTITY_RE.match(text, i)
            out.add(_decode_html_entity(match) if match else "&")
            i = match.end() if match else i + 1
            continue
        end = text.find(">", i)
        if end < 0:
            raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, i)}")
        inner = text[i + 1 : end]
        if inner.startswith("/"):
            _close_html_tag(text, i, inner[1:].strip().lower(), stack, out)
        else:
            _open_html_tag(text, i, inner, stack, out)
        i = end + 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    return out.result()


def _open_html_tag(
    text: str, index: int, inner: str, stack: list[_OpenTag], out: _EntityBuilder
) -> None:
    name, attrs = _parse_html_tag(inner.rstrip("/"))
    if name not in HTML_TAG_TYPES or (name == "span" and attrs.get("class") != "tg-spoiler"):
        raise EntityParseError(
            f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, index)}'
        )
    if name == "code" and stack and stack[-1].name == "pre":
        language = attrs.get("class", "")
        if language.startswith("language-"):
            stack[-1].language = language[len("language-") :]
    stack.append(_OpenTag(name, out.length16, attrs))


def _close_html_tag(
    text: str, index: int, name: str, stack: list[_OpenTag], out: _EntityBuilder
) -> None:
    if not stack:
        raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, index)}")
    top = stack.pop()
    if name and name != top.name:
        raise EntityParseError(
            f"Unmatched end tag at byte offset {_byte_offset(text, index)}, "
            f'expected "</{top.name}>", found "</{name}>"'
        )
    kind = HTML_TAG_TYPES[top.name]
    if top.name == "a":
        href = top.attrs.get("href", "")
        if href.startswith("tg://user?id=") and href[13:].isdigit():
            out.entity("text_mention", top.start16, user={"id": int(href[13:])})
        elif href:
            out.entity("text_link", top.start16, url=href)
    elif top.name == "pre":
        extra = {"language": top.language} if top.language else {}
        out.entity("pre", top.start16, **extra)
    elif top.name == "code" and stack and stack[-1].name == "pre":
        return
    elif top.name == "tg-emoji":
        out.entity("custom_emoji", top.start16, custom_emoji_id=top.attrs.get("emoji-id", ""))
    elif top.name == "blockquote" and "expandable" in top.attrs:
        out.entity("expandable_blockquote", top.start16)
    else:
        out.entity(kind, top.start16)


MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
MDV2_MARKERS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough"}
MDV2_MARKERS["||"] = "spoiler"
MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
}


def _add_code(out: _EntityBuilder, content: str, block: bool, start: int) -> None:
    """Append inline code, or a pre block whose first line may name its language."""
    if not block:
        out.add(content)
        out.entity("code", start)
        return
    language, newline, rest = content.partition("\n")
    if newline and language and " " not in language:
        content = rest
    else:
        language = ""
    out.add(content)
    out.entity("pre", start, **({"language": language} if language else {}))


def _mdv2_code(text: str, i: int, out: _EntityBuilder) -> int:
    """Inline code or pre block starting at ``i``; return the index after it."""
    fence = "```" if text.startswith("```", i) else "`"
    j = i + len(fence)
    body: list[str] = []
    while j < len(text):
        if text[j] == "\\" and j + 1 < len(text):
            body.append(text[j + 1])
            j += 2
            continue
        if text.startswith(fence, j):
            break
        body.append(text[j])
        j += 1
    else:
        kind = "Pre" if fence == "```" else "Code"
        raise EntityParseError(
            f"Can't find end of {kind} entity at byte offset {_byte_offset(text, i)}"
        )
    _add_code(out, "".join(body), fence == "```", out.length16)
    return j + len(fence)


def _mdv2_link_end(text: str, i: int) -> tuple[str, int] | None:
    """After ``]`` at ``i``: ``(url)`` -> (url, index after), else None."""
    if not text.startswith("(", i + 1):
        return None
    j = i + 2
    url: list[str] = []
    while j < len(text) and text[j] != ")":
        if text[j] == "\\" and j + 1 < len(text):
            j += 1
        url.append(text[j])
        j += 1
    if j >= len(text):
        return None
    return "".join(url), j + 1


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """MarkdownV2: reserved characters must be escaped; nested entities allowed."""
    out = _EntityBuilder()
    stack: list[tuple[str, int, int]] = []  # (marker, start16, index)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.add(text[i + 1])
            i += 2
        elif c == "`":
            i = _mdv2_code(text, i, out)
        elif (c == "|" and text.startswith("||", i)) or c in "*_~":
            marker = "__" if text.startswith("__", i) else ("||" if c == "|" else c)
            _mdv2_toggle(marker, i, stack, out)
            i += len(marker)
        elif c == "[":
            stack.append(("[", out.length16, i))
            i += 1
        elif c == "]" and stack and stack[-1][0] == "[":
            link = _mdv2_link_end(text, i)
            if link is None:
                raise EntityParseError(
                    f"Can't find end of a URL at byte offset {_byte_offset(text, i)}"
                )
            _, start16, _ = stack.pop()
            out.entity("text_link", start16, url=link[0])
            i = link[1]
        elif c == ">" and (i == 0 or text[i - 1] == "\n"):
            i = _mdv2_quote_line(text, i, out)
        elif c in MDV2_RESERVED:
            raise EntityParseError(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            out.add(c)
            i += 1
    if stack:
        marker, _, index = stack[-1]
        name = "TextUrl" if marker == "[" else MDV2_NAMES[MDV2_MARKERS[marker]]
        raise EntityParseError(
            f"Can't find end of {name} entity at byte offset {_byte_offset(text, index)}"
        )
    return out.result()


def _mdv2_toggle(
    marker: str, index: int, stack: list[tuple[str, int, int]], out: _EntityBuilder
) -> None:
    for pos in range(len(stack) - 1, -1, -1):
        if stack[pos][0] == marker:
            _, start16, _ = stack.pop(pos)
            out.entity(MDV2_MARKERS[marker], start16)
            return
    stack.append((marker, out.length16, index))


def _mdv2_quote_line(text: str, i: int, out: _EntityBuilder) -> int:
    """A ``>`` quoted line (consecutive ones merge into one blockquote)."""
    start = out.length16
    while i < len(text) and text[i] == ">":
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        line_text, line_entities = parse_markdown_v2(text[i + 1 : end])
        base = out.length16
        out.add(line_text)
        for entity in line_entities:
            out.entities.append({**entity, "offset": entity["offset"] + base})
        i = end
        if text.startswith("\n>", i):
            out.add("\n")
            i += 1
    out.entity("blockquote", start)
    return i


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Legacy Markdown: *bold* _italic_ `code` ```pre``` [text](url), no nesting."""
    out = _EntityBuilder()
    i, n = 0, len(text)
    kinds = {"*": "bold", "_": "italic"}
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if c not in "_*`[":
            out.add(c)
            i += 1
            continue
        fence = "```" if text.startswith("```", i) else c
        close = "](" if c == "[" else fence
        end = text.find(close, i + len(fence))
        if end < 0 or (c == "[" and text.find(")", end) < 0):
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {_byte_offset(text, i)}"
            )
        content = text[i + len(fence) : end]
        start = out.length16
        if c == "[":
            url_end = text.find(")", end)
            out.add(content)
            out.entity("text_link", start, url=text[end + 2 : url_end])
            i = url_end + 1
            continue
        if fence == "```" or c == "`":
            _add_code(out, content, fence == "```", start)
        else:
            out.add(content)
            out.entity(kinds[c], start)
        i = end + len(fence)
    return out.result()


PARSE_MODES: dict[str, Callable[[str], tuple[str, list[dict[str, Any]]]]] = {
    "html": parse_html,
    "markdown": parse_markdown,
    "markdownv2": parse_markdown_v2,
}

AUTO_ENTITY_RE = re.compile(
    r"(?P<bot_command>(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/]))"
    r"|(?P<url>\bhttps?://[^\s<>\"]+[^\s<>\".,;:!?)\]'])"
    r"|(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)"
    r"|(?P<mention>(?<![\w@])@[A-Za-z][A-Za-z0-9_]{4,31}\b)"
    r"|(?P<hashtag>(?<![\w#])#\w*[^\W\d]\w*)"
)
NO_AUTO_INSIDE = frozenset({"code", "pre", "text_link", "url", "email"})


def auto_entities(text: str, existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities Telegram detects by itself: commands, URLs, e-mails, mentions, hashtags."""
    if not any(ch in text for ch in "/@#:"):
        return existing
    blocked = [
        (e["offset"], e["offset"] + e["length"]) for e in existing if e["type"] in NO_AUTO_INSIDE
    ]
    found: list[dict[str, Any]] = []
    for match in AUTO_ENTITY_RE.finditer(text):
        offset = utf16_len(text[: match.start()])
        length = utf16_len(match.group(0))
        if any(start < offset + length and offset < end for start, end in blocked):
            continue
        found.append({"offset": offset, "length": length, "type": match.lastgroup or "url"})
    if not found:
        return existing
    return sorted(existing + found, key=lambda e: (e["offset"], -e["length"]))


# --------------------------------------------------------------------------------------
# 5. state: chats, bots, flood control, limits, faults
# --------------------------------------------------------------------------------------


class ApiError(Exception):
    """A Bot API error answer: ``{"ok":false,"error_code":…,"description":…}``."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


class ControlError(Exception):
    """A control API error answer: ``{"ok":false,"error":…}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


CHAT_TYPES = ("private", "group", "supergroup", "channel")


def chat_type_by_id(chat_id: int) -> str:
    """Telegram's id convention: >0 private, -100… supergroup/channel, other <0 group."""
    if chat_id > 0:
        return "private"
    if str(chat_id).startswith("-100") and chat_id <= -1000000000000:
        return "supergroup"
    return "group"


@dataclass
class ChatState:
    """A chat known to one bot (registered, or seen in an injected update)."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False
    blocked: bool = False
    migrate_to_chat_id: int | None = None
    last_message_id: int = 0
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # sent by the bot
    deleted: set[int] = field(default_factory=set)

    def to_chat(self) -> dict[str, Any]:
        """The Chat object as it appears inside a Message."""
        chat: dict[str, Any] = {"id": self.id}
        if self.type == "private":
            chat["first_name"] = self.first_name or f"User {self.id}"
            if self.last_name:
                chat["last_name"] = self.last_name
        else:
            chat["title"] = self.title or f"{self.type.capitalize()} {abs(self.id)}"
        if self.username:
            chat["username"] = self.username
        chat["type"] = self.type
        if self.type == "group":
            chat["all_members_are_administrators"] = True
        if self.is_forum:
            chat["is_forum"] = True
        return chat

    def to_record(self) -> dict[str, Any]:
        """Everything worth keeping across a restart (journal) or showing (control API)."""
        record: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name", "last_name", "migrate_to_chat_id"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        record["is_forum"] = self.is_forum
        record["blocked"] = self.blocked
        record["last_message_id"] = self.last_message_id
        return record

    def update_from(self, spec: dict[str, Any]) -> None:
        for key in ("title", "username", "first_name", "last_name"):
            if key in spec:
                setattr(self, key, None if spec[key] is None else str(spec[key]))
        if "is_forum" in spec:
            self.is_forum = bool(spec["is_forum"])
        if "blocked" in spec:
            self.blocked = bool(spec["blocked"])
        if "migrate_to_chat_id" in spec:
            value = spec["migrate_to_chat_id"]
            self.migrate_to_chat_id = None if value is None else int(value)
        if "last_message_id" in spec:
            self.last_message_id = max(self.last_message_id, int(spec["last_message_id"]))

    def message_exists(self, message_id: int) -> bool:
        return 0 < message_id <= self.last_message_id and message_id not in self.deleted


@dataclass
class Limits:
    """Telegram's flood limits; 0 disables one limit, ``enabled`` all of them."""

    enabled: bool = True
    per_bot_per_second: float = 30
    private_chat_per_second: float = 1
    private_chat_burst: float = 3
    group_per_minute: float = 20

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "per_bot_per_second": self.per_bot_per_second,
            "private_chat_per_second": self.private_chat_per_second,
            "private_chat_burst": self.private_chat_burst,
            "group_per_minute": self.group_per_minute,
        }

    def update(self, spec: dict[str, Any]) -> None:
        for key, value in spec.items():
            if key == "enabled":
                self.enabled = bool(value)
            elif key in self.to_dict():
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ControlError(f"limit {key} must be a number >= 0")
                setattr(self, key, value)
            else:
                raise ControlError(f"unknown limit {key!r}")


def _window_wait(times: collections.deque[float], limit: float, window: float, now: float) -> float:
    """Seconds until one more event fits ``limit`` events per sliding ``window``."""
    while times and times[0] <= now - window:
        times.popleft()
    count = int(limit)
    if count <= 0 or len(times) < count:
        return 0.0
    return times[len(times) - count] + window - now


class FloodState:
    """One bot's flood-control windows (per bot, per private chat, per group)."""

    def __init__(self) -> None:
        self.bot_times: collections.deque[float] = collections.deque()
        self.private: dict[int, list[float]] = {}  # chat -> [tokens, time]
        self.groups: dict[int, collections.deque[float]] = {}

    def wait(self, limits: Limits, chat: ChatState, now: float) -> float:
        """0 when a message may go now, else the seconds to wait."""
        waits = [
            _window_wait(self.bot_times, limits.per_bot_per_second, 1.0 - FLOOD_TOLERANCE, now)
        ]
        if chat.type == "private":
            rate = limits.private_chat_per_second
            if rate > 0:
                tokens = self._tokens(limits, chat.id, now)
                if tokens < 1.0 - FLOOD_TOLERANCE * rate:
                    waits.append((1.0 - tokens) / rate)
        else:
            times = self.groups.setdefault(chat.id, collections.deque())
            waits.append(_window_wait(times, limits.group_per_minute, 60.0 - FLOOD_TOLERANCE, now))
        return max(waits)

    def _tokens(self, limits: Limits, chat_id: int, now: float) -> float:
        burst = max(limits.private_chat_burst, 1.0)
        state = self.private.get(chat_id)
        if state is None:
            state = self.private[chat_id] = [burst, now]
        state[0] = min(burst, state[0] + (now - state[1]) * limits.private_chat_per_second)
        state[1] = now
        return state[0]

    def commit(self, limits: Limits, chat: ChatState, now: float) -> None:
        self.bot_times.append(now)
        if chat.type == "private":
            if limits.private_chat_per_second > 0:
                self._tokens(limits, chat.id, now)
                self.private[chat.id][0] -= 1.0
        else:
            self.groups.setdefault(chat.id, collections.deque()).append(now)


@dataclass
class BotState:
    """One registered bot: identity, update queue, chats, sent messages, flood state.

    Updates live as pre-serialised JSON bytes in ``history`` (every update injected since
    the last reset, ids consecutive from ``base_id``); the pending queue is the suffix from
    ``pending_start``.
    """

    id: int
    token: str
    first_name: str
    username: str
    next_update_id: int
    base_id: int = 0
    history: list[bytes] = field(default_factory=list)
    history_types: list[str] = field(default_factory=list)
    pending_start: int = 0
    confirmed_offset: int = 0
    allowed_updates: list[str] | None = None
    webhook: dict[str, Any] | None = None
    chats: dict[int, ChatState] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    callback_ids: set[str] = field(default_factory=set)
    flood: FloodState = field(default_factory=FloodState)
    poller: asyncio.Future[str] | None = None
    logged_out: bool = False

    def __post_init__(self) -> None:
        if not self.base_id:
            self.base_id = self.next_update_id

    # identity ---------------------------------------------------------------------
    def user(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "first_name": self.first_name, "username": self.username}

    # update queue -----------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        return len(self.history) - self.pending_start

    def first_pending_id(self) -> int:
        return self.base_id + self.pending_start

    def append_update(self, data: bytes, update_type: str) -> None:
        self.history.append(data)
        self.history_types.append(update_type)

    def confirm(self, offset: int) -> bool:
        """Forget updates below ``offset`` (negative: keep the last -offset). Changed?"""
        before = (self.pending_start, self.confirmed_offset)
        total = len(self.history)
        if offset < 0:
            self.pending_start = max(self.pending_start, total + offset)
        elif offset > 0:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self.pending_start = max(self.pending_start, min(total, offset - self.base_id))
        return (self.pending_start, self.confirmed_offset) != before

    def drop_pending(self) -> None:
        self.pending_start = len(self.history)

    def allows(self, update_type: str) -> bool:
        if self.allowed_updates is None:
            return update_type not in DEFAULT_EXCLUDED_UPDATES
        return update_type in self.allowed_updates

    def collect(self, limit: int) -> list[bytes]:
        """Up to ``limit`` pending updates the bot's allowed_updates let through.

        Disallowed updates at the head of the queue are dropped (Telegram never delivers
        them); disallowed ones further on are skipped and go with the next confirmation.
        """
        types = self.history_types
        total = len(types)
        start = self.pending_start
        while start < total and not self.allows(types[start]):
            start += 1
        self.pending_start = start
        if self.allowed_updates is None and not DEFAULT_EXCLUDED_UPDATES.intersection(
            types[start : start + limit]
        ):
            return self.history[start : start + limit]
        picked: list[bytes] = []
        index = start
        while index < total and len(picked) < limit:
            if self.allows(types[index]):
                picked.append(self.history[index])
            index += 1
        return picked

    def wake(self, reason: str) -> None:
        poller = self.poller
        if poller is not None and not poller.done():
            poller.set_result(reason)

    def reset(self) -> None:
        """Forget updates (ids keep increasing), chats, webhook, sent records."""
        self.wake("reset")
        self.history = []
        self.history_types = []
        self.base_id = self.next_update_id
        self.pending_start = 0
        self.confirmed_offset = 0
        self.allowed_updates = None
        self.webhook = None
        self.chats = {}
        self.sent = []
        self.callback_ids = set()
        self.flood = FloodState()
        self.logged_out = False

    # chats ------------------------------------------------------------------------
    def chat_by_username(self, username: str) -> ChatState | None:
        wanted = username.lower()
        for chat in self.chats.values():
            if chat.username and chat.username.lower() == wanted:
                return chat
        return None


@dataclass
class Fault:
    """An injected failure for matching Bot API requests (see the control API)."""

    id: int
    mode: str
    methods: frozenset[str] | None
    bot_id: int | None
    remaining: int | None
    expires_at: float | None
    status: int
    description: str
    delay: float
    retry_after: int

    def active(self, now: float) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.expires_at is None or now < self.expires_at

    def matches(self, bot_id: int | None, method: str) -> bool:
        if self.bot_id is not None and self.bot_id != bot_id:
            return False
        return self.methods is None or method in self.methods

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.mode,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "bot_id": self.bot_id,
            "remaining": self.remaining,
            "expires_in": None if self.expires_at is None else round(self.expires_at - now, 3),
            "status": self.status,
            "description": self.description,
            "delay": self.delay,
        }


DEFAULT_ERROR_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: CONFLICT_OTHER_POLLER,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Stats:
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    responses: collections.Counter[str] = field(default_factory=collections.Counter)
    conflicts_409: int = 0
    flood_429: int = 0

    def count_response(self, status: int) -> None:
        self.responses[str(status)] += 1
        if status == 409:
            self.conflicts_409 += 1
        elif status == 429:
            self.flood_429 += 1


@dataclass
class Upload:
    """A file part of a multipart request, saved under the temp dir."""

    field: str
    filename: str
    content_type: str
    path: str
    size: int
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {
            "upload": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass
class FileInfo:
    file_id: str
    file_unique_id: str
    size: int
    name: str | None = None
    mime_type: str | None = None
    path: str | None = None  # a readable local file, when there is one


# --------------------------------------------------------------------------------------
# 6. the journal: append-only persistence in --dir
# --------------------------------------------------------------------------------------


_QUOTED_TYPES: dict[str, bytes] = {}


def _quote_type(update_type: str) -> bytes:
    quoted = urllib.parse.quote(update_type, safe="").encode()
    if len(_QUOTED_TYPES) < 1000:
        _QUOTED_TYPES[update_type] = quoted
    return quoted


class Journal:
    """Append-only state file, one record per line, flushed before every answer.

    Lines are either JSON records (``{"t": kind, …}``) or updates, stored verbatim so they
    are restored byte for byte: ``u <bot_id> <update_id> <quoted type> <update JSON>``.
    Buffered records are written with one ``write`` before the emulator answers the request
    that produced them, so an answered request survives SIGTERM and kill -9 alike (no fsync:
    an OS crash is out of scope). On start-up the file is replayed and rewritten compactly.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.buffer: list[bytes] = []
        self.fd = -1

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, kind: str, **data: Any) -> None:
        self.buffer.append(json_bytes({"t": kind, **data}) + b"\n")

    def message_id(self, bot_id: int, chat_id: int, message_id: int) -> None:
        """The hot path's record (one per message sent), formatted without json."""
        self.buffer.append(b'{"t":"mid","b":%d,"c":%d,"m":%d}\n' % (bot_id, chat_id, message_id))

    def update(self, bot_id: int, update_id: int, update_type: str, data: bytes) -> None:
        quoted = _QUOTED_TYPES.get(update_type) or _quote_type(update_type)
        self.buffer.append(b"u %d %d %s %s\n" % (bot_id, update_id, quoted, data))

    def flush(self) -> None:
        if not self.buffer or self.fd < 0:
            self.buffer.clear()
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_lines(self) -> Iterable[bytes]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as handle:
            return handle.read().split(b"\n")

    def rewrite(self, lines: Iterable[bytes]) -> None:
        """Replace the file atomically with ``lines`` (the compacted state)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as handle:
            for line in lines:
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):
            dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# --------------------------------------------------------------------------------------
# 7. generated updates
# --------------------------------------------------------------------------------------

GENERATED_KINDS = (
    "message",
    "edited_message",
    "channel_post",
    "callback_query",
    "my_chat_member",
    "chat_member",
    "message_reaction",
)
FIRST_NAMES = ("Alice", "Bob", "Carol", "Dmitri", "Eve", "Fatima", "Grace", "Hiro", "Иван", "Zoë")
TEXTS = (
    "hello",
    "how are you?",
    "Привет, мир!",
    "こんにちは世界",
    "price is 5$ 🚀🚀",
    "multi\nline\ntext",
    'quotes "inside" and \\ backslash',
    "see https://example.org/page?x=1",
    "emoji 👨‍👩‍👧 family",
    "a" * 300,
)
REACTIONS = ("👍", "❤", "🔥", "🎉", "😁")


class UpdateGenerator:
    """Realistic Update objects for one bot (control API ``generate``)."""

    def __init__(self, bot: BotState, spec: dict[str, Any]) -> None:
        self.bot = bot
        self.count = int(spec.get("count", 1))
        kinds = spec.get("kinds") or ["message"]
        unknown = [k for k in kinds if k not in GENERATED_KINDS]
        if unknown or not isinstance(kinds, list):
            raise ControlError(f"unknown kinds {unknown}; choose from {list(GENERATED_KINDS)}")
        if not 0 <= self.count <= 1_000_000:
            raise ControlError("count must be between 0 and 1000000")
        self.kinds: list[str] = kinds
        self.commands = [str(c) for c in spec.get("commands") or ["/start", "/help", "/ask"]]
        self.ratio = float(spec.get("unknown_field_ratio", 0.0))
        self.rng = random.Random(spec.get("seed"))
        self.now = now_unix()
        self.users = [self._user(i) for i in range(12)]
        self.chats = self._chats(spec.get("chat_ids"))
        self.channels = [c for c in self.chats if c.type == "channel"]
        self.non_channels = [c for c in self.chats if c.type != "channel"] or self.chats

    def _user(self, index: int) -> dict[str, Any]:
        user_id = 100_000_000 + (self.bot.id * 7919 + index * 104_729) % 800_000_000
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": FIRST_NAMES[index % len(FIRST_NAMES)],
        }
        if index % 3:
            user["username"] = f"user{user_id}"
        user["language_code"] = ("en", "ru", "de", "ja")[index % 4]
        return user

    def _chats(self, chat_ids: Any) -> list[ChatState]:
        if chat_ids:
            chats = []
            for raw in chat_ids:
                chat_id = int(raw)
                chat = self.bot.chats.get(chat_id) or ChatState(chat_id, chat_type_by_id(chat_id))
                if chat.type == "private" and not chat.first_name:
                    chat.first_name = FIRST_NAMES[chat_id % len(FIRST_NAMES)]
                chats.append(chat)
            return chats
        base = self.bot.id % 1_000_000
        specs = [
            ChatState(u["id"], "private", first_name=u["first_name"], username=u.get("username"))
            for u in self.users[:5]
        ]
        specs.append(ChatState(-(4_000_000_000 + base), "group", title="Emulated group"))
        specs.append(
            ChatState(-(1_001_000_000_000 + base), "supergroup", title="Emulated supergroup")
        )
        if "channel_post" in self.kinds:
            specs.append(
                ChatState(-(1_002_000_000_000 + base), "channel", title="Emulated channel")
            )
        return [self.bot.chats.get(spec.id) or spec for spec in specs]

    def generate(self) -> list[dict[str, Any]]:
        makers: dict[str, Callable[[], dict[str, Any]]] = {
            "message": self._message_update,
            "edited_message": self._edited_update,
            "channel_post": self._channel_update,
            "callback_query": self._callback_update,
            "my_chat_member": self._my_member_update,
            "chat_member": self._member_update,
            "message_reaction": self._reaction_update,
        }
        kinds = self.kinds
        updates = []
        for index in range(self.count):
            update = makers[kinds[index % len(kinds)]]()
            if self.ratio and self.rng.random() < self.ratio:
                self._add_unknown_fields(update, index)
            updates.append(update)
        return updates

    # pieces -----------------------------------------------------------------------
    def _chat(self) -> ChatState:
        return self.rng.choice(self.non_channels)

    def _sender(self, chat: ChatState) -> dict[str, Any]:
        if chat.type == "private":
            for user in self.users:
                if user["id"] == chat.id:
                    return user
            return {"id": chat.id, "is_bot": False, "first_name": chat.first_name or "User"}
        return self.rng.choice(self.users)

    def _message(self, chat: ChatState, sender: dict[str, Any] | None) -> dict[str, Any]:
        chat.last_message_id += 1
        message: dict[str, Any] = {"message_id": chat.last_message_id}
        if sender is not None:
            message["from"] = sender
        else:
            message["sender_chat"] = chat.to_chat()
        message["chat"] = chat.to_chat()
        message["date"] = self.now
        if self.commands and self.rng.random() < 0.4:
            command = self.rng.choice(self.commands)
            if chat.type != "private" and self.rng.random() < 0.5:
                command = f"{command}@{self.bot.username}"
            message["text"] = f"{command} {self.rng.choice(TEXTS)}"
            message["entities"] = [
                {"offset": 0, "length": utf16_len(command), "type": "bot_command"}
            ]
        else:
            message["text"] = self.rng.choice(TEXTS)
        return message

    def _message_update(self) -> dict[str, Any]:
        chat = self._chat()
        return {"message": self._message(chat, self._sender(chat))}

    def _edited_update(self) -> dict[str, Any]:
        chat = self._chat()
        message = self._message(chat, self._sender(chat))
        if chat.last_message_id > 1:
            message["message_id"] = self.rng.randint(1, chat.last_message_id - 1)
        message["edit_date"] = self.now
        return {"edited_message": message}

    def _channel_update(self) -> dict[str, Any]:
        if not self.channels:
            return self._message_update()
        chat = self.rng.choice(self.channels)
        return {"channel_post": self._message(chat, None)}

    def _callback_update(self) -> dict[str, Any]:
        chat = self._chat()
        chat.last_message_id += 1
        data = self.rng.choice(("yes", "no", "page:2", "vote:😀"))
        message = {
            "message_id": chat.last_message_id,
            "from": self.bot.user(),
            "chat": chat.to_chat(),
            "date": self.now,
            "text": "Choose:",
            "reply_markup": {
                "inline_keyboard": [
                    [
                        {"text": "Yes", "callback_data": "yes"},
                        {"text": "No", "callback_data": "no"},
                    ]
                ]
            },
        }
        query = {
            "id": str(self.rng.getrandbits(62)),
            "from": self._sender(chat),
            "message": message,
            "chat_instance": str(self.rng.getrandbits(63) - (1 << 62)),
            "data": data,
        }
        return {"callback_query": query}

    def _member_change(self, chat: ChatState, member: dict[str, Any]) -> dict[str, Any]:
        joined = self.rng.random() < 0.5
        old, new = ("left", "member") if joined else ("member", "left")
        if chat.type == "private":
            old, new = ("member", "kicked") if joined else ("kicked", "member")
        old_member: dict[str, Any] = {"user": member, "status": old}
        new_member: dict[str, Any] = {"user": member, "status": new}
        if new == "kicked":
            new_member["until_date"] = 0
        return {
            "chat": chat.to_chat(),
            "from": self._sender(chat),
            "date": self.now,
            "old_chat_member": old_member,
            "new_chat_member": new_member,
        }

    def _my_member_update(self) -> dict[str, Any]:
        chat = self._chat()
        return {"my_chat_member": self._member_change(chat, self.bot.user())}

    def _member_update(self) -> dict[str, Any]:
        chat = self._chat()
        return {"chat_member": self._member_change(chat, self.rng.choice(self.users))}

    def _reaction_update(self) -> dict[str, Any]:
        chat = self._chat()
        if chat.last_message_id == 0:
            chat.last_message_id = 1
        reaction = {
            "chat": chat.to_chat(),
            "message_id": self.rng.randint(1, chat.last_message_id),
            "user": self._sender(chat),
            "date": self.now,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": self.rng.choice(REACTIONS)}],
        }
        return {"message_reaction": reaction}

    def _add_unknown_fields(self, update: dict[str, Any], index: int) -> None:
        """Fields no Bot API version has, to prove lossless passthrough."""
        update["x_future_field"] = {
            "seq": index,
            "tags": ["alpha", "βeta", "🚀"],
            "nested": {"flag": True, "ratio": 0.125, "none": None},
        }
        payload = next(iter(update.values()))
        if isinstance(payload, dict):
            target = payload.get("message") if "message" in payload else payload
            if isinstance(target, dict):
                target["x_future_message_field"] = {"kind": "new", "values": [1, 2, 3]}


# --------------------------------------------------------------------------------------
# 8. the emulator: Bot API methods and the control API
# --------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    peer: str = ""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    close: bool = False
    drop: bool = False


Handled = Response | Awaitable[Response]
Params = dict[str, Any]
MethodHandler = Callable[[BotState, Params], Handled]

OK_TRUE = b'{"ok":true,"result":true}'


def ok_response(result: Any, description: str | None = None) -> Response:
    envelope: dict[str, Any] = {"ok": True, "result": result}
    if description:
        envelope["description"] = description
    return Response(200, json_bytes(envelope))


def ok_raw(result_json: bytes) -> Response:
    return Response(200, b'{"ok":true,"result":' + result_json + b"}")


def error_response(
    code: int, description: str, parameters: dict[str, Any] | None = None
) -> Response:
    envelope: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    headers: tuple[tuple[str, str], ...] = ()
    if parameters:
        envelope["parameters"] = parameters
        if "retry_after" in parameters:
            headers = (("Retry-After", str(parameters["retry_after"])),)
    return Response(code, json_bytes(envelope), headers)


def control_response(result: Any, status: int = 200) -> Response:
    return Response(status, json_bytes({"ok": True, "result": result}))


def control_error(message: str, status: int = 400) -> Response:
    return Response(status, json_bytes({"ok": False, "error": message}))


def flood_error(wait: float) -> ApiError:
    retry_after = max(1, math.ceil(wait - 1e-9))
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


# parameter access (values are strings from query/form/multipart, any JSON type from JSON)


def p_str(params: Params, key: str) -> str | None:
    value = params.get(key)
    if value is None or isinstance(value, Upload):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def p_num(params: Params, key: str, default: float) -> float:
    value = params.get(key)
    if value is None or isinstance(value, bool | Upload | dict | list):
        return default
    try:
        return float(str(value).strip())
    except ValueError:
        return default


def p_int(params: Params, key: str, default: int = 0) -> int:
    number = p_num(params, key, float(default))
    return int(number) if math.isfinite(number) else default


def p_bool(params: Params, key: str) -> bool:
    value = params.get(key)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1") if value is not None else False


def p_json(params: Params, key: str, error: str) -> Any:
    value = params.get(key)
    if value is None or isinstance(value, dict | list):
        return value
    if isinstance(value, Upload):
        raise ApiError(400, error)
    text = str(value).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(400, error) from None


INLINE_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
MEDIA_KINDS = ("photo", "document", "audio", "video", "voice", "animation")
FILE_ID_PREFIX = {
    "photo": "AgAC",
    "document": "BQAC",
    "audio": "CQAC",
    "video": "BAAC",
    "voice": "AwAC",
    "animation": "CgAC",
}
DEFAULT_MIME = {
    "audio": "audio/mpeg",
    "video": "video/mp4",
    "voice": "audio/ogg",
    "animation": "video/mp4",
}
COPYABLE_FIELDS = (
    "text",
    "entities",
    "link_preview_options",
    "photo",
    "document",
    "audio",
    "video",
    "voice",
    "animation",
    "caption",
    "caption_entities",
    "show_caption_above_media",
    "has_media_spoiler",
)
RATE_LIMITED = frozenset(
    {"sendMessage", "copyMessage", "forwardMessage", "editMessageText"}
    | {f"send{kind.capitalize()}" for kind in MEDIA_KINDS}
)


def parse_inline_keyboard(rows: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(
            400,
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup should be an '
            "Array of Arrays",
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: "
                    'Field "text" must be of type String',
                )
            if not any(action in button for action in INLINE_BUTTON_ACTIONS):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard",
                )
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return rows


def parse_entities_value(value: Any, error: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, error) from None
    if not isinstance(value, list):
        raise ApiError(400, error)
    for entity in value:
        if (
            not isinstance(entity, dict)
            or not isinstance(entity.get("type"), str)
            or not isinstance(entity.get("offset"), int)
            or not isinstance(entity.get("length"), int)
        ):
            raise ApiError(400, error)
    return [e for e in value if e["length"] > 0]


class Emulator:
    """All state and every handler; knows nothing about sockets."""

    def __init__(self, opts: Options, temp_dir: str, journal: Journal | None) -> None:
        self.opts = opts
        self.temp_dir = temp_dir
        self.journal = journal
        self.bots: dict[int, BotState] = {}
        # next update id of bots forgotten by a reset: a re-registered bot goes on from
        # there, so update ids are never reused (consumers de-duplicate on them)
        self.retired_update_ids: dict[int, int] = {}
        self.limits = Limits()
        self.faults: list[Fault] = []
        self.stats = Stats()
        self.files: dict[str, FileInfo] = {}
        self.downloads: dict[str, FileInfo] = {}
        self.sent_seq = 0
        self.fault_seq = 0
        self.file_seq = 0
        self.started = time.time()
        self.on_down: Callable[[float], None] | None = None
        self.on_up: Callable[[], None] | None = None
        self.methods: dict[str, tuple[str, MethodHandler]] = {}
        self._register_methods()

    # ------------------------------------------------------------------ registry ----
    def _register_methods(self) -> None:
        table: dict[str, MethodHandler] = {
            "getMe": self.m_get_me,
            "getUpdates": self.m_get_updates,
            "setWebhook": self.m_set_webhook,
            "deleteWebhook": self.m_delete_webhook,
            "getWebhookInfo": self.m_get_webhook_info,
            "logOut": self.m_log_out,
            "close": self.m_close,
            "sendMessage": self.m_send_message,
            "sendChatAction": self.m_send_chat_action,
            "editMessageText": self.m_edit_message_text,
            "deleteMessage": self.m_delete_message,
            "answerCallbackQuery": self.m_answer_callback_query,
            "getChat": self.m_get_chat,
            "copyMessage": self.m_copy_message,
            "forwardMessage": self.m_forward_message,
            "getFile": self.m_get_file,
        }
        for kind in MEDIA_KINDS:
            table[f"send{kind.capitalize()}"] = self._media_method(kind)
        self.methods = {name.lower(): (name, handler) for name, handler in table.items()}

    def _media_method(self, kind: str) -> MethodHandler:
        def handler(bot: BotState, params: Params) -> Handled:
            return self.send_media(bot, params, kind)

        return handler

    # ------------------------------------------------------------------ bots/chats --
    def register_bot(
        self,
        token: str,
        first_name: str | None = None,
        username: str | None = None,
        *,
        persist: bool = True,
    ) -> BotState:
        bot_id = parse_token(token, self.opts.filter_rem, self.opts.filter_mod)
        bot = self.bots.get(bot_id)
        if bot is None:
            start = self.retired_update_ids.get(bot_id) or random.SystemRandom().randint(
                100_000_000, 899_999_999
            )
            bot = BotState(
                id=bot_id,
                token=token,
                first_name=first_name or f"Emulated Bot {bot_id}",
                username=username or f"emulated_{bot_id}_bot",
                next_update_id=start,
            )
            self.bots[bot_id] = bot
            log.info("registered %s (@%s)", safe_bot_ref(bot_id), bot.username)
        else:
            bot.token = token
            bot.first_name = first_name or bot.first_name
            bot.username = username or bot.username
            bot.logged_out = False
        if persist and self.journal:
            self.journal.record(
                "bot",
                id=bot.id,
                token=bot.token,
                first_name=bot.first_name,
                username=bot.username,
                next=bot.next_update_id,
                base=bot.base_id,
            )
        return bot

    def register_chat(self, bot: BotState, spec: dict[str, Any]) -> ChatState:
        try:
            chat_id = int(spec["id"])
        except (KeyError, TypeError, ValueError):
            raise ControlError("every chat needs an integer id") from None
        chat_type = spec.get("type") or None
        if chat_type is not None and chat_type not in CHAT_TYPES:
            raise ControlError(f"chat type must be one of {list(CHAT_TYPES)}")
        chat = bot.chats.get(chat_id)
        if chat is None:
            chat = ChatState(chat_id, chat_type or chat_type_by_id(chat_id))
            bot.chats[chat_id] = chat
        elif chat_type:
            chat.type = chat_type
        chat.update_from(spec)
        self._journal_chat(bot, chat)
        return chat

    def _journal_chat(self, bot: BotState, chat: ChatState) -> None:
        if self.journal:
            self.journal.record("chat", b=bot.id, c=chat.to_record())

    def _observe_chat(self, bot: BotState, chat_obj: Any, touched: dict[int, ChatState]) -> None:
        if not isinstance(chat_obj, dict) or not isinstance(chat_obj.get("id"), int):
            return
        chat_id = chat_obj["id"]
        chat = bot.chats.get(chat_id)
        if chat is None:
            chat_type = chat_obj.get("type")
            chat = ChatState(
                chat_id, chat_type if chat_type in CHAT_TYPES else chat_type_by_id(chat_id)
            )
            chat.update_from(
                {
                    k: chat_obj[k]
                    for k in ("title", "username", "first_name", "last_name", "is_forum")
                    if k in chat_obj
                }
            )
            bot.chats[chat_id] = chat
        touched[chat_id] = chat

    def _observe(
        self, bot: BotState, update_type: str, payload: Any, touched: dict[int, ChatState]
    ) -> None:
        """Learn chats, message ids and callback query ids from an injected update."""
        if not isinstance(payload, dict):
            return
        message = payload
        if update_type == "callback_query":
            if isinstance(payload.get("id"), str):
                bot.callback_ids.add(payload["id"])
            message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        chat_obj = message.get("chat")
        if chat_obj is None:
            return
        self._observe_chat(bot, chat_obj, touched)
        chat = touched.get(chat_obj.get("id")) if isinstance(chat_obj, dict) else None
        message_id = message.get("message_id")
        if chat is not None and isinstance(message_id, int) and message_id > chat.last_message_id:
            chat.last_message_id = message_id

    def reset(self, bots: bool) -> None:
        """Forget updates, sent records, counters, faults, limits, chats, webhooks (bots)."""
        for bot in self.bots.values():
            bot.reset()
            self.retired_update_ids[bot.id] = bot.next_update_id
        if bots:
            self.bots.clear()
        self.stats = Stats()
        self.clear_faults()
        self.limits = Limits()
        self.files.clear()
        self.downloads.clear()
        if self.journal:
            self.journal.record("reset", bots=bots)
        log.info("reset (bots too: %s)", bots)

    def clear_faults(self) -> None:
        was_down = any(f.mode == "down" for f in self.faults)
        self.faults.clear()
        if was_down and self.on_up is not None:
            self.on_up()

    # ------------------------------------------------------------------ updates -----
    def inject(self, bot: BotState, updates: list[Any]) -> dict[str, Any]:
        first = bot.next_update_id
        touched: dict[int, ChatState] = {}
        known_before = set(bot.chats)
        journal = self.journal
        for update in updates:
            if not isinstance(update, dict):
                raise ControlError("every update must be a JSON object")
            update_id = bot.next_update_id
            bot.next_update_id += 1
            body: dict[str, Any] = {"update_id": update_id}
            for key, value in update.items():
                if key != "update_id":
                    body[key] = value
            update_type = update_type_of(body)
            self._observe(bot, update_type, body.get(update_type), touched)
            data = json_bytes(body)
            bot.append_update(data, update_type)
            if journal:
                journal.update(bot.id, update_id, update_type, data)
        for chat in touched.values():
            if chat.id not in known_before:
                self._journal_chat(bot, chat)
            elif journal:
                journal.message_id(bot.id, chat.id, chat.last_message_id)
        if updates:
            asyncio.get_running_loop().call_soon(bot.wake, "updates")
        last = bot.next_update_id - 1
        return {"first_update_id": first, "last_update_id": last, "count": len(updates)}

    def _journal_offset(self, bot: BotState) -> None:
        if self.journal:
            self.journal.record("off", b=bot.id, c=bot.confirmed_offset, p=bot.first_pending_id())

    def _collect(self, bot: BotState, limit: int) -> bytes:
        before = bot.pending_start
        picked = bot.collect(limit)
        if bot.pending_start != before:
            self._journal_offset(bot)
        return b"[" + b",".join(picked) + b"]"

    # ------------------------------------------------------------------ Bot API -----
    def handle_api(self, req: Request) -> Handled:
        path = req.path
        if path.startswith("/file/bot"):
            return self.counted(self.download(path))
        if not path.startswith("/bot"):
            return self.counted(error_response(404, "Not Found"))
        token, sep, method = path[4:].partition("/")
        if not sep:
            return self.counted(error_response(404, "Not Found"))
        lower = method.lower()
        entry = self.methods.get(lower)
        self.stats.calls[entry[0] if entry else method] += 1
        fault, delay = self._match_faults(token_bot_id(token), lower)
        if delay > 0:
            return self.counted(self._delayed(delay, fault, req, token, entry))
        if fault is not None:
            return self.counted(self._fault_response(fault))
        return self.counted(self._invoke(req, token, entry))

    async def _delayed(
        self,
        delay: float,
        fault: Fault | None,
        req: Request,
        token: str,
        entry: tuple[str, MethodHandler] | None,
    ) -> Response:
        await asyncio.sleep(delay)
        if fault is not None:
            return self._fault_response(fault)
        result = self._invoke(req, token, entry)
        return result if isinstance(result, Response) else await result

    def counted(self, handled: Handled) -> Handled:
        """Count the answer's status in the stats (now, or when the awaitable finishes)."""
        if isinstance(handled, Response):
            self.stats.count_response(handled.status)
            return handled
        return self._count_later(handled)

    async def _count_later(self, awaitable: Awaitable[Response]) -> Response:
        try:
            response = await awaitable
        except ApiError as exc:
            response = error_response(exc.code, exc.description, exc.parameters)
        self.stats.count_response(response.status)
        return response

    def _invoke(self, req: Request, token: str, entry: tuple[str, MethodHandler] | None) -> Handled:
        try:
            bot = self.authorize(token)
            if entry is None:
                raise ApiError(404, "Not Found")
            params = self.parse_params(req)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %s", safe_bot_ref(bot.id), entry[0], sorted(params))
            return entry[1](bot, params)
        except ApiError as exc:
            return error_response(exc.code, exc.description, exc.parameters)

    def authorize(self, token: str) -> BotState:
        try:
            bot_id = parse_token(token, self.opts.filter_rem, self.opts.filter_mod)
        except TokenError as exc:
            raise ApiError(exc.status, exc.description) from None
        bot = self.bots.get(bot_id)
        if bot is None or bot.token != token or bot.logged_out:
            raise ApiError(401, "Unauthorized")
        return bot

    def parse_params(self, req: Request) -> Params:
        params: Params = dict(urllib.parse.parse_qsl(req.query, keep_blank_values=True))
        if not req.body:
            return params
        content_type = req.headers.get("content-type", "")
        main_type = content_type.partition(";")[0].strip().lower()
        if main_type == "application/json":
            params.update(self._json_params(req.body))
        elif main_type == "application/x-www-form-urlencoded":
            text = req.body.decode("utf-8", "replace")
            params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        elif main_type == "multipart/form-data":
            params.update(self._multipart_params(req.body, content_type))
        return params

    @staticmethod
    def _json_params(body: bytes) -> Params:
        try:
            value = json.loads(body)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON object") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Bad Request: can't parse JSON object")
        return {key: item for key, item in value.items() if item is not None}

    def _multipart_params(self, body: bytes, content_type: str) -> Params:
        match = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', content_type, re.I)
        if not match:
            raise ApiError(400, "Bad Request: can't parse multipart/form-data: no boundary")
        boundary = (match.group(1) or match.group(2)).encode("latin-1")
        try:
            parts = parse_multipart(body, boundary)
        except ValueError as exc:
            raise ApiError(400, f"Bad Request: can't parse multipart/form-data: {exc}") from None
        params: Params = {}
        for part in parts:
            if part.filename is None:
                params[part.name] = part.data.decode("utf-8", "replace")
            else:
                params[part.name] = self._save_upload(part)
        return params

    def _save_upload(self, part: MultipartPart) -> Upload:
        self.file_seq += 1
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(part.filename or "file"))[:80]
        path = os.path.join(self.temp_dir, f"upload-{os.getpid()}-{self.file_seq}-{safe}")
        with open(path, "wb") as handle:
            handle.write(part.data)
        return Upload(
            field=part.name,
            filename=part.filename or "file",
            content_type=part.content_type or "application/octet-stream",
            path=path,
            size=len(part.data),
            sha256=hashlib.sha256(part.data).hexdigest(),
        )

    # faults ---------------------------------------------------------------------------
    def _match_faults(self, bot_id: int | None, method: str) -> tuple[Fault | None, float]:
        if not self.faults:
            return None, 0.0
        now = time.monotonic()
        self.faults = [f for f in self.faults if f.active(now) or f.mode == "down"]
        action: Fault | None = None
        delay = 0.0
        for fault in self.faults:
            if fault.mode == "down" or not fault.matches(bot_id, method):
                continue
            if fault.mode == "delay":
                delay = max(delay, fault.delay)
            elif action is None:
                action = fault
            else:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
        return action, delay

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        if fault.mode == "drop":
            return Response(0, b"", drop=True)
        parameters = None
        if fault.status == 429:
            parameters = {"retry_after": fault.retry_after}
        return error_response(fault.status, fault.description, parameters)

    # ------------------------------------------------------------------ helpers -----
    def resolve_chat(self, bot: BotState, raw: Any) -> ChatState:
        if raw is None or raw == "" or isinstance(raw, Upload):
            raise ApiError(400, "Bad Request: chat_id is empty")
        text = str(raw).strip()
        chat: ChatState | None
        if text.startswith("@"):
            chat = bot.chat_by_username(text[1:])
        else:
            try:
                chat = bot.chats.get(int(text)) if not isinstance(raw, bool) else None
            except ValueError:
                chat = None
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.migrate_to_chat_id is not None:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrate_to_chat_id},
            )
        return chat

    def chat_param(self, bot: BotState, params: Params, key: str = "chat_id") -> ChatState:
        return self.resolve_chat(bot, params.get(key))

    @staticmethod
    def check_blocked(chat: ChatState) -> None:
        if not chat.blocked:
            return
        description = {
            "private": "Forbidden: bot was blocked by the user",
            "group": "Forbidden: bot was kicked from the group chat",
            "supergroup": "Forbidden: bot was kicked from the supergroup chat",
            "channel": "Forbidden: bot is not a member of the channel chat",
        }[chat.type]
        raise ApiError(403, description)

    def check_flood(self, bot: BotState, chat: ChatState) -> None:
        limits = self.limits
        if not limits.enabled:
            return
        now = time.monotonic()
        wait = bot.flood.wait(limits, chat, now)
        if wait > 0:
            raise flood_error(wait)
        bot.flood.commit(limits, chat, now)

    def formatted(
        self,
        params: Params,
        text_key: str,
        entities_key: str,
        empty_error: str | None,
    ) -> tuple[str, list[dict[str, Any]]]:
        """Text after parse_mode / entities; ``empty_error`` set = the text is required."""
        raw = p_str(params, text_key)
        if not raw:
            if empty_error:
                raise ApiError(400, empty_error)
            return "", []
        if params.get(entities_key) is not None:
            entities = parse_entities_value(
                params.get(entities_key), f"Bad Request: can't parse {entities_key} JSON object"
            )
            text = raw
        else:
            mode = (p_str(params, "parse_mode") or "").strip()
            if not mode:
                text, entities = raw, []
            else:
                parser = PARSE_MODES.get(mode.lower())
                if parser is None:
                    raise ApiError(400, "Bad Request: unsupported parse_mode")
                try:
                    text, entities = parser(raw)
                except EntityParseError as exc:
                    raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        if empty_error and not text.strip():
            raise ApiError(400, empty_error)
        return text, entities

    @staticmethod
    def reply_markup(params: Params) -> dict[str, Any] | None:
        """Validated reply_markup; the inline keyboard (the part a Message shows) or None."""
        error = "Bad Request: can't parse reply keyboard markup JSON object"
        value = p_json(params, "reply_markup", error)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ApiError(400, error)
        if "inline_keyboard" in value:
            rows = parse_inline_keyboard(value["inline_keyboard"])
            return {"inline_keyboard": rows} if rows else None
        if "keyboard" in value:
            rows = value["keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise ApiError(
                    400,
                    'Bad Request: field "keyboard" of the ReplyKeyboardMarkup should be an '
                    "Array of Arrays",
                )
            return None
        if "remove_keyboard" in value or "force_reply" in value:
            return None
        raise ApiError(400, error)

    def reply_target(self, bot: BotState, chat: ChatState, params: Params) -> dict[str, Any] | None:
        error = "Bad Request: can't parse reply parameters JSON object"
        spec = p_json(params, "reply_parameters", error)
        if spec is None:
            message_id = p_int(params, "reply_to_message_id", 0)
            if not message_id:
                return None
            spec = {
                "message_id": message_id,
                "allow_sending_without_reply": p_bool(params, "allow_sending_without_reply"),
            }
        if not isinstance(spec, dict):
            raise ApiError(400, error)
        message_id = p_int(spec, "message_id", 0)
        target = chat
        if spec.get("chat_id") not in (None, ""):
            target = self.resolve_chat(bot, spec["chat_id"])
        if target.message_exists(message_id):
            stored = target.messages.get(message_id)
            if stored is not None:
                return {k: v for k, v in stored.items() if k != "reply_to_message"}
            return {"message_id": message_id, "chat": target.to_chat(), "date": now_unix()}
        if p_bool(spec, "allow_sending_without_reply"):
            return None
        raise ApiError(400, "Bad Request: message to be replied not found")

    def common_fields(self, bot: BotState, chat: ChatState, params: Params) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        thread = p_int(params, "message_thread_id", 0)
        if thread and chat.type == "supergroup":
            fields["message_thread_id"] = thread
            if chat.is_forum:
                fields["is_topic_message"] = True
        reply = self.reply_target(bot, chat, params)
        if reply is not None:
            fields["reply_to_message"] = reply
        return fields

    def new_message(self, bot: BotState, chat: ChatState, fields: dict[str, Any]) -> dict[str, Any]:
        chat.last_message_id += 1
        message_id = chat.last_message_id
        message: dict[str, Any] = {"message_id": message_id}
        if chat.type == "channel":
            message["sender_chat"] = chat.to_chat()
        else:
            message["from"] = bot.user()
        message["chat"] = chat.to_chat()
        message["date"] = now_unix()
        message.update(fields)
        chat.messages[message_id] = message
        if self.journal:
            self.journal.message_id(bot.id, chat.id, message_id)
        return message

    def record(
        self, bot: BotState, method: str, chat_id: int | None, params: Params, result: Any
    ) -> None:
        self.sent_seq += 1
        described = {k: v.describe() if isinstance(v, Upload) else v for k, v in params.items()}
        bot.sent.append(
            {
                "seq": self.sent_seq,
                "time": time.time(),
                "method": method,
                "chat_id": chat_id,
                "params": described,
                "result": result,
            }
        )

    def deliver(
        self, bot: BotState, method: str, params: Params, chat: ChatState, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Blocked check, flood control, then the message exists and is recorded."""
        self.check_blocked(chat)
        self.check_flood(bot, chat)
        message = self.new_message(bot, chat, fields)
        self.record(bot, method, chat.id, params, message)
        return message

    # ------------------------------------------------------------------ methods -----
    def m_get_me(self, bot: BotState, params: Params) -> Handled:
        user = bot.user()
        user.update(
            {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        )
        return ok_response(user)

    def m_log_out(self, bot: BotState, params: Params) -> Handled:
        bot.logged_out = True
        log.info("%s logged out", safe_bot_ref(bot.id))
        return Response(200, OK_TRUE)

    def m_close(self, bot: BotState, params: Params) -> Handled:
        return Response(200, OK_TRUE)

    def _set_allowed_updates(self, bot: BotState, params: Params) -> None:
        if params.get("allowed_updates") in (None, ""):
            return
        value = p_json(
            params, "allowed_updates", "Bad Request: can't parse allowed_updates JSON object"
        )
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(400, "Bad Request: can't parse allowed_updates JSON object")
        new = value or None
        if new != bot.allowed_updates:
            bot.allowed_updates = new
            if self.journal:
                self.journal.record("allow", b=bot.id, a=new)

    def m_get_updates(self, bot: BotState, params: Params) -> Handled:
        if bot.webhook is not None:
            raise ApiError(409, CONFLICT_WEBHOOK_ACTIVE)
        offset = p_int(params, "offset", 0)
        limit = min(max(p_int(params, "limit", 100), 1), 100)
        timeout = min(max(p_num(params, "timeout", 0.0), 0.0), 50.0)
        self._set_allowed_updates(bot, params)
        bot.wake("conflict")
        if bot.confirm(offset):
            self._journal_offset(bot)
        result = self._collect(bot, limit)
        if len(result) > 2 or timeout <= 0:
            return ok_raw(result)
        return self._long_poll(bot, limit, timeout)

    async def _long_poll(self, bot: BotState, limit: int, timeout: float) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter: asyncio.Future[str] = loop.create_future()
            bot.poller = waiter
            timer = loop.call_later(max(deadline - loop.time(), 0.0), _settle, waiter, "timeout")
            try:
                reason = await waiter
            finally:
                timer.cancel()
                if bot.poller is waiter:
                    bot.poller = None
            if reason == "conflict":
                return error_response(409, CONFLICT_OTHER_POLLER)
            if reason == "webhook":
                return error_response(409, CONFLICT_SET_WEBHOOK)
            result = self._collect(bot, limit)
            if len(result) > 2 or reason == "timeout" or loop.time() >= deadline:
                return ok_raw(result)

    def m_set_webhook(self, bot: BotState, params: Params) -> Handled:
        url = (p_str(params, "url") or "").strip()
        if not url:
            return self.m_delete_webhook(bot, params)
        parsed = urllib.parse.urlsplit(url)
        schemes = ("http", "https") if self.opts.local else ("https",)
        if parsed.scheme.lower() not in schemes:
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        if not parsed.hostname:
            raise ApiError(400, "Bad Request: bad webhook: Wrong HTTP URL specified")
        secret = p_str(params, "secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        default_max = self.opts.max_webhook_connections or (100 if self.opts.local else 40)
        max_connections = p_int(params, "max_connections", default_max)
        max_connections = min(max(max_connections, 1), 100000 if self.opts.local else 100)
        self._set_allowed_updates(bot, params)
        webhook: dict[str, Any] = {
            "url": url,
            "max_connections": max_connections,
            "has_custom_certificate": params.get("certificate") is not None,
        }
        if p_str(params, "ip_address"):
            webhook["ip_address"] = p_str(params, "ip_address")
        if p_bool(params, "drop_pending_updates"):
            bot.drop_pending()
            self._journal_offset(bot)
        description = "Webhook is already set" if bot.webhook == webhook else "Webhook was set"
        bot.webhook = webhook
        if self.journal:
            self.journal.record("wh", b=bot.id, w=webhook)
        bot.wake("webhook")
        return ok_response(True, description)

    def m_delete_webhook(self, bot: BotState, params: Params) -> Handled:
        if p_bool(params, "drop_pending_updates"):
            bot.drop_pending()
            self._journal_offset(bot)
        description = "Webhook was deleted" if bot.webhook else "Webhook is already deleted"
        bot.webhook = None
        if self.journal:
            self.journal.record("wh", b=bot.id, w=None)
        return ok_response(True, description)

    def m_get_webhook_info(self, bot: BotState, params: Params) -> Handled:
        webhook = bot.webhook or {}
        info: dict[str, Any] = {
            "url": webhook.get("url", ""),
            "has_custom_certificate": bool(webhook.get("has_custom_certificate")),
            "pending_update_count": bot.pending_count,
        }
        if webhook:
            info["max_connections"] = webhook["max_connections"]
            if "ip_address" in webhook:
                info["ip_address"] = webhook["ip_address"]
        if bot.allowed_updates is not None:
            info["allowed_updates"] = bot.allowed_updates
        return ok_response(info)

    def m_send_message(self, bot: BotState, params: Params) -> Handled:
        text, entities = self.formatted(
            params, "text", "entities", "Bad Request: message text is empty"
        )
        markup = self.reply_markup(params)
        chat = self.chat_param(bot, params)
        if len(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        fields = self.common_fields(bot, chat, params)
        fields["text"] = text
        entities = auto_entities(text, entities)
        if entities:
            fields["entities"] = entities
        preview = p_json(
            params,
            "link_preview_options",
            "Bad Request: can't parse link preview options JSON object",
        )
        if isinstance(preview, dict) and preview:
            fields["link_preview_options"] = preview
        if p_bool(params, "protect_content"):
            fields["has_protected_content"] = True
        if markup:
            fields["reply_markup"] = markup
        return ok_response(self.deliver(bot, "sendMessage", params, chat, fields))

    def send_media(self, bot: BotState, params: Params, kind: str) -> Handled:
        method = f"send{kind.capitalize()}"
        source = params.get(kind)
        if source is None or source == "":
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        caption, caption_entities = self.formatted(params, "caption", "caption_entities", None)
        markup = self.reply_markup(params)
        chat = self.chat_param(bot, params)
        info = self.input_file(params, kind, source)
        if len(caption) > MAX_CAPTION_LENGTH:
            raise ApiError(400, "Bad Request: message caption is too long")
        fields = self.common_fields(bot, chat, params)
        fields.update(self.media_fields(kind, info, params))
        if caption:
            fields["caption"] = caption
            entities = auto_entities(caption, caption_entities)
            if entities:
                fields["caption_entities"] = entities
        if p_bool(params, "show_caption_above_media"):
            fields["show_caption_above_media"] = True
        if p_bool(params, "has_spoiler") and kind in ("photo", "video", "animation"):
            fields["has_media_spoiler"] = True
        if p_bool(params, "protect_content"):
            fields["has_protected_content"] = True
        if markup:
            fields["reply_markup"] = markup
        return ok_response(self.deliver(bot, method, params, chat, fields))

    def m_send_chat_action(self, bot: BotState, params: Params) -> Handled:
        chat = self.chat_param(bot, params)
        action = (p_str(params, "action") or "").strip()
        if action not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self.check_blocked(chat)
        self.record(bot, "sendChatAction", chat.id, params, True)
        return Response(200, OK_TRUE)

    def m_edit_message_text(self, bot: BotState, params: Params) -> Handled:
        text, entities = self.formatted(
            params, "text", "entities", "Bad Request: message text is empty"
        )
        markup = self.reply_markup(params)
        if p_str(params, "inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self.chat_param(bot, params)
        message_id = p_int(params, "message_id", 0)
        if message_id <= 0:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        if len(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        old = chat.messages.get(message_id)
        if old is None:
            if chat.message_exists(message_id):
                raise ApiError(400, "Bad Request: message can't be edited")
            raise ApiError(400, "Bad Request: message to edit not found")
        if "text" not in old:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        entities = auto_entities(text, entities)
        if (
            old.get("text") == text
            and old.get("entities", []) == entities
            and old.get("reply_markup") == markup
        ):
            raise ApiError(400, NOT_MODIFIED)
        self.check_blocked(chat)
        self.check_flood(bot, chat)
        skip = ("text", "entities", "reply_markup", "edit_date")
        new = {k: v for k, v in old.items() if k not in skip}
        new["edit_date"] = now_unix()
        new["text"] = text
        if entities:
            new["entities"] = entities
        if markup:
            new["reply_markup"] = markup
        chat.messages[message_id] = new
        self.record(bot, "editMessageText", chat.id, params, new)
        return ok_response(new)

    def m_delete_message(self, bot: BotState, params: Params) -> Handled:
        chat = self.chat_param(bot, params)
        message_id = p_int(params, "message_id", 0)
        if message_id <= 0:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        if not chat.message_exists(message_id):
            raise ApiError(400, "Bad Request: message to delete not found")
        chat.deleted.add(message_id)
        chat.messages.pop(message_id, None)
        self.record(bot, "deleteMessage", chat.id, params, True)
        return Response(200, OK_TRUE)

    def m_answer_callback_query(self, bot: BotState, params: Params) -> Handled:
        query_id = (p_str(params, "callback_query_id") or "").strip()
        if query_id not in bot.callback_ids:
            raise ApiError(400, QUERY_INVALID)
        if len(p_str(params, "text") or "") > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        bot.callback_ids.discard(query_id)
        self.record(bot, "answerCallbackQuery", None, params, True)
        return Response(200, OK_TRUE)

    def m_get_chat(self, bot: BotState, params: Params) -> Handled:
        chat = self.chat_param(bot, params)
        info = chat.to_chat()
        info.pop("all_members_are_administrators", None)
        info["accent_color_id"] = abs(chat.id) % 7
        info["max_reaction_count"] = 11
        info["accepted_gift_types"] = {
            "unlimited_gifts": False,
            "limited_gifts": False,
            "unique_gifts": False,
            "premium_subscription": False,
        }
        return ok_response(info)

    def _copy_source(
        self, bot: BotState, params: Params, not_found: str
    ) -> tuple[ChatState, ChatState, int, dict[str, Any]]:
        chat = self.chat_param(bot, params)
        source_chat = self.chat_param(bot, params, "from_chat_id")
        message_id = p_int(params, "message_id", 0)
        if message_id <= 0:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        if not source_chat.message_exists(message_id):
            raise ApiError(400, not_found)
        stored = source_chat.messages.get(message_id) or {}
        content = {k: stored[k] for k in COPYABLE_FIELDS if k in stored}
        return chat, source_chat, message_id, content

    def m_copy_message(self, bot: BotState, params: Params) -> Handled:
        chat, _, _, content = self._copy_source(
            bot, params, "Bad Request: message to copy not found"
        )
        if "caption" in params:
            caption, entities = self.formatted(params, "caption", "caption_entities", None)
            content.pop("caption_entities", None)
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        markup = self.reply_markup(params)
        fields = self.common_fields(bot, chat, params)
        fields.update(content or {"text": ""})
        if markup:
            fields["reply_markup"] = markup
        message = self.deliver(bot, "copyMessage", params, chat, fields)
        return ok_response({"message_id": message["message_id"]})

    def m_forward_message(self, bot: BotState, params: Params) -> Handled:
        chat, source_chat, message_id, content = self._copy_source(
            bot, params, "Bad Request: message to forward not found"
        )
        stored = source_chat.messages.get(message_id)
        origin: dict[str, Any]
        if source_chat.type == "channel":
            origin = {
                "type": "channel",
                "chat": source_chat.to_chat(),
                "message_id": message_id,
                "date": stored["date"] if stored else now_unix(),
            }
        elif stored is not None:
            origin = {"type": "user", "sender_user": bot.user(), "date": stored["date"]}
        else:
            origin = {"type": "hidden_user", "sender_user_name": "Unknown", "date": now_unix()}
        fields: dict[str, Any] = {"forward_origin": origin}
        fields.update(content or {"text": ""})
        return ok_response(self.deliver(bot, "forwardMessage", params, chat, fields))

    def m_get_file(self, bot: BotState, params: Params) -> Handled:
        info = self.files.get((p_str(params, "file_id") or "").strip())
        if info is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        result: dict[str, Any] = {
            "file_id": info.file_id,
            "file_unique_id": info.file_unique_id,
            "file_size": info.size,
        }
        if info.path and self.opts.local:
            result["file_path"] = info.path
        else:
            for rel, known in self.downloads.items():
                if known is info:
                    result["file_path"] = rel
                    break
        return ok_response(result)

    def download(self, path: str) -> Response:
        """``/file/bot<token>/<file_path>`` (non-local mode serves uploaded files)."""
        token, _, rel = path[len("/file/bot") :].partition("/")
        try:
            self.authorize(token)
        except ApiError as exc:
            return error_response(exc.code, exc.description)
        info = self.downloads.get(rel)
        if self.opts.local or info is None or not info.path:
            return error_response(404, "Not Found")
        try:
            with open(info.path, "rb") as handle:
                data = handle.read()
        except OSError:
            return error_response(404, "Not Found")
        return Response(200, data, content_type=info.mime_type or "application/octet-stream")

    # ------------------------------------------------------------------ files -------
    def _new_file(
        self,
        kind: str,
        seed: str,
        size: int,
        name: str | None,
        mime: str | None,
        path: str | None,
    ) -> FileInfo:
        digest = hashlib.sha256(seed.encode("utf-8", "replace")).digest()
        unique = "AQAD" + base64.urlsafe_b64encode(digest[:9]).decode().rstrip("=")
        file_id = FILE_ID_PREFIX.get(kind, "BQAC") + base64.urlsafe_b64encode(
            os.urandom(45)
        ).decode().rstrip("=")
        info = FileInfo(file_id, unique, size, name, mime, path)
        self.files[file_id] = info
        return info

    def input_file(self, params: Params, kind: str, source: Any) -> FileInfo:
        if isinstance(source, str) and source.startswith("attach://"):
            source = params.get(source[len("attach://") :])
            if not isinstance(source, Upload):
                raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        if isinstance(source, Upload):
            return self._file_from_upload(kind, source)
        if not isinstance(source, str):
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        value = source.strip()
        if self.opts.local and (value.startswith("/") or value.lower().startswith("file://")):
            return self._file_from_path(kind, value)
        if re.match(r"(?i)https?://[^/\s]+", value):
            name = os.path.basename(urllib.parse.urlsplit(value).path) or None
            size = 1024 + int.from_bytes(hashlib.sha256(value.encode()).digest()[:3], "big")
            mime = mimetypes.guess_type(name or "")[0] or DEFAULT_MIME.get(kind)
            return self._new_file(kind, "url:" + value, size, name, mime, None)
        if FILE_ID_RE.fullmatch(value):
            known = self.files.get(value)
            if known is not None:
                return known
            return FileInfo(value, "AQAD" + value[-12:], 10240, None, DEFAULT_MIME.get(kind))
        raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    def _file_from_upload(self, kind: str, upload: Upload) -> FileInfo:
        if upload.size == 0:
            raise ApiError(400, "Bad Request: file must be non-empty")
        mime = (
            upload.content_type
            if upload.content_type != "application/octet-stream"
            else mimetypes.guess_type(upload.filename)[0] or DEFAULT_MIME.get(kind)
        )
        info = self._new_file(
            kind, "sha256:" + upload.sha256, upload.size, upload.filename, mime, upload.path
        )
        extension = os.path.splitext(upload.filename)[1][:10] or ".bin"
        self.downloads[f"{kind}s/file_{self.file_seq}{extension}"] = info
        return info

    def _file_from_path(self, kind: str, value: str) -> FileInfo:
        path = value
        if value.lower().startswith("file://"):
            path = urllib.parse.unquote(urllib.parse.urlsplit(value).path)
        if not os.path.isabs(path) or not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ApiError(400, "Bad Request: file not found")
        stat = os.stat(path)
        if stat.st_size == 0:
            raise ApiError(400, "Bad Request: file must be non-empty")
        if stat.st_size > UPLOAD_LIMIT_LOCAL:
            raise ApiError(400, "Bad Request: file is too big")
        name = os.path.basename(path)
        mime = mimetypes.guess_type(name)[0] or DEFAULT_MIME.get(kind)
        seed = f"path:{path}:{stat.st_size}:{stat.st_mtime_ns}"
        return self._new_file(kind, seed, stat.st_size, name, mime, path)

    def media_fields(self, kind: str, info: FileInfo, params: Params) -> dict[str, Any]:
        base = {
            "file_id": info.file_id,
            "file_unique_id": info.file_unique_id,
            "file_size": info.size,
        }
        if kind == "photo":
            return {"photo": self._photo_sizes(info)}
        described: dict[str, Any] = {}
        if kind in ("audio", "video", "voice", "animation"):
            described["duration"] = p_int(params, "duration", 0)
        if kind in ("video", "animation"):
            described["width"] = p_int(params, "width", 640)
            described["height"] = p_int(params, "height", 360)
        if kind == "audio":
            for key in ("performer", "title"):
                if p_str(params, key):
                    described[key] = p_str(params, key)
        if info.name and kind != "voice":
            described["file_name"] = info.name
        if info.mime_type:
            described["mime_type"] = info.mime_type
        described.update(base)
        fields = {kind: described}
        if kind == "animation":
            document = {
                k: v for k, v in described.items() if k not in ("duration", "width", "height")
            }
            fields["document"] = document
        return fields

    def _photo_sizes(self, info: FileInfo) -> list[dict[str, Any]]:
        sizes = []
        for width, share in ((90, 0.02), (320, 0.2)):
            size = max(1, int(info.size * share))
            small = self._new_file(
                "photo", f"{info.file_unique_id}:{width}", size, None, "image/jpeg", None
            )
            sizes.append(
                {
                    "file_id": small.file_id,
                    "file_unique_id": small.file_unique_id,
                    "file_size": small.size,
                    "width": width,
                    "height": width * 3 // 4,
                }
            )
        sizes.append(
            {
                "file_id": info.file_id,
                "file_unique_id": info.file_unique_id,
                "file_size": info.size,
                "width": 800,
                "height": 600,
            }
        )
        return sizes


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


# --------------------------------------------------------------------------------------
# the control API (emulator-only): /_emulator/... on the API port, or the --control-port
# --------------------------------------------------------------------------------------

ControlHandler = Callable[[dict[str, str], dict[str, Any]], Any]
FAULT_MODES = ("error", "delay", "drop", "down")


class ControlApi:
    """JSON in, ``{"ok":true,"result":…}`` / ``{"ok":false,"error":…}`` out."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.routes: dict[tuple[str, str], ControlHandler] = {
            ("GET", "/"): self.index,
            ("GET", "/ping"): self.ping,
            ("GET", "/bots"): self.get_bots,
            ("POST", "/bots"): self.post_bots,
            ("GET", "/chats"): self.get_chats,
            ("POST", "/chats"): self.post_chats,
            ("GET", "/updates"): self.get_updates,
            ("POST", "/updates"): self.post_updates,
            ("GET", "/sent"): self.get_sent,
            ("GET", "/stats"): self.get_stats,
            ("GET", "/faults"): self.get_faults,
            ("POST", "/faults"): self.post_faults,
            ("DELETE", "/faults"): self.delete_faults,
            ("GET", "/limits"): self.get_limits,
            ("POST", "/limits"): self.post_limits,
            ("POST", "/reset"): self.post_reset,
        }

    def handle(self, req: Request) -> Response:
        path = req.path
        if path == "/_emulator" or path.startswith("/_emulator/"):
            path = path[len("/_emulator") :]
        path = "/" + path.strip("/")
        handler = self.routes.get((req.method.upper(), path))
        if handler is None:
            if any(route_path == path for _, route_path in self.routes):
                return control_error(f"method {req.method} not allowed on {path}", 405)
            return control_error(f"no control endpoint {path}", 404)
        try:
            body = self._body(req)
            result = handler(dict(urllib.parse.parse_qsl(req.query)), body)
        except ControlError as exc:
            return control_error(str(exc), exc.status)
        except (ValueError, TypeError, KeyError) as exc:
            return control_error(f"bad request: {type(exc).__name__}: {exc}")
        return result if isinstance(result, Response) else control_response(result)

    @staticmethod
    def _body(req: Request) -> dict[str, Any]:
        if not req.body.strip():
            return {}
        try:
            value = json.loads(req.body)
        except ValueError as exc:
            raise ControlError(f"body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ControlError("body must be a JSON object")
        return value

    def _bot(self, value: Any) -> BotState:
        if value is None or value == "":
            raise ControlError("bot_id is required")
        try:
            bot_id = int(value)
        except (TypeError, ValueError):
            raise ControlError("bot_id must be an integer") from None
        bot = self.emu.bots.get(bot_id)
        if bot is None:
            raise ControlError(f"unknown bot_id {bot_id}", 404)
        return bot

    # endpoints ----------------------------------------------------------------------
    def index(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return sorted(f"{method} /_emulator{path}" for method, path in self.routes)

    def ping(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return {
            "emulator": EMULATOR_VERSION,
            "api_version": API_VERSION,
            "pid": os.getpid(),
            "local": self.emu.opts.local,
            "uptime": round(time.time() - self.emu.started, 3),
        }

    def get_bots(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return [{**bot.public(), "logged_out": bot.logged_out} for bot in self.emu.bots.values()]

    def post_bots(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        token = body.get("token")
        if not isinstance(token, str):
            raise ControlError("token (string) is required")
        try:
            bot = self.emu.register_bot(token, body.get("first_name"), body.get("username"))
        except TokenError as exc:
            raise ControlError(f"invalid token: {exc.description}") from None
        return bot.public()

    def get_chats(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(query.get("bot_id"))
        return [chat.to_record() for chat in bot.chats.values()]

    def post_chats(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(body.get("bot_id"))
        chats = body.get("chats")
        if not isinstance(chats, list) or not all(isinstance(c, dict) for c in chats):
            raise ControlError("chats must be a list of objects")
        return [self.emu.register_chat(bot, spec).to_record() for spec in chats]

    def post_updates(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(body.get("bot_id"))
        if "generate" in body:
            spec = body["generate"]
            if not isinstance(spec, dict):
                raise ControlError("generate must be an object")
            updates: list[Any] = UpdateGenerator(bot, spec).generate()
        else:
            updates = body.get("updates")
            if not isinstance(updates, list):
                raise ControlError("updates must be a list (or use generate)")
        return self.emu.inject(bot, updates)

    def get_updates(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(query.get("bot_id"))
        start = 0
        if query.get("since"):
            start = min(max(int(query["since"]) - bot.base_id, 0), len(bot.history))
        head = {
            "bot_id": bot.id,
            "count": len(bot.history) - start,
            "pending": bot.pending_count,
            "first_pending_update_id": bot.first_pending_id(),
            "next_update_id": bot.next_update_id,
            "confirmed_offset": bot.confirmed_offset,
        }
        prefix = json_bytes(head)[:-1] + b',"updates":['
        body_bytes = b",".join(bot.history[start:])
        return Response(200, b'{"ok":true,"result":' + prefix + body_bytes + b"]}}")

    def get_sent(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(query.get("bot_id"))
        records: Iterable[dict[str, Any]] = bot.sent
        if query.get("since"):
            since = int(query["since"])
            records = (r for r in records if r["seq"] > since)
        if query.get("chat_id"):
            chat_id = int(query["chat_id"])
            records = (r for r in records if r["chat_id"] == chat_id)
        if query.get("method"):
            method = query["method"].lower()
            records = (r for r in records if r["method"].lower() == method)
        return list(records)

    def get_stats(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        emu = self.emu
        bots = emu.bots.values()
        return {
            "calls": dict(emu.stats.calls),
            "responses": dict(emu.stats.responses),
            "conflicts_409": emu.stats.conflicts_409,
            "flood_429": emu.stats.flood_429,
            "confirmed_offset": {str(b.id): b.confirmed_offset for b in bots},
            "pending": {str(b.id): b.pending_count for b in bots},
            "next_update_id": {str(b.id): b.next_update_id for b in bots},
            "getupdates_active": {
                str(b.id): b.poller is not None and not b.poller.done() for b in bots
            },
            "sent": {str(b.id): len(b.sent) for b in bots},
            "uptime": round(time.time() - emu.started, 3),
        }

    def get_faults(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        now = time.monotonic()
        return [f.to_dict(now) for f in self.emu.faults if f.active(now)]

    def post_faults(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        fault = self._fault_from(body)
        self.emu.faults.append(fault)
        if fault.mode == "down" and self.emu.on_down is not None:
            duration = fault.expires_at - time.monotonic() if fault.expires_at else 3.0
            asyncio.get_running_loop().call_soon(self.emu.on_down, duration)
        log.info("fault added: %s", fault.to_dict(time.monotonic()))
        return fault.to_dict(time.monotonic())

    def _fault_from(self, body: dict[str, Any]) -> Fault:
        mode = body.get("mode")
        if mode not in FAULT_MODES:
            raise ControlError(f"mode must be one of {list(FAULT_MODES)}")
        methods = body.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise ControlError("methods must be a list of method names")
            methods = frozenset(m.lower() for m in methods)
        count = body.get("count")
        duration = body.get("duration")
        if mode == "down" and duration is None:
            duration = 3.0
        status = int(body.get("status", 500))
        if not 100 <= status <= 599:
            raise ControlError("status must be an HTTP status code")
        retry_after = int(body.get("retry_after", 1))
        description = body.get("description") or (
            f"Too Many Requests: retry after {retry_after}"
            if status == 429
            else DEFAULT_ERROR_DESCRIPTIONS.get(status, HTTP_REASONS.get(status, "Error"))
        )
        self.emu.fault_seq += 1
        return Fault(
            id=self.emu.fault_seq,
            mode=mode,
            methods=methods,
            bot_id=None if body.get("bot_id") is None else int(body["bot_id"]),
            remaining=None if count is None else int(count),
            expires_at=None if duration is None else time.monotonic() + float(duration),
            status=status,
            description=str(description),
            delay=float(body.get("delay", 1.0)),
            retry_after=retry_after,
        )

    def delete_faults(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        cleared = len(self.emu.faults)
        self.emu.clear_faults()
        return {"cleared": cleared}

    def get_limits(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return self.emu.limits.to_dict()

    def post_limits(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        self.emu.limits.update(body)
        return self.emu.limits.to_dict()

    def post_reset(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        self.emu.reset(bool(body.get("bots", False)))
        return {"bots": [bot.public() for bot in self.emu.bots.values()]}


# --------------------------------------------------------------------------------------
# persistence: replaying and compacting the journal
# --------------------------------------------------------------------------------------


def restore(emu: Emulator, lines: Iterable[bytes]) -> int:
    """Replay journal lines into ``emu``; return how many records were applied."""
    applied = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            if raw.startswith(b"u "):
                _restore_update(emu, raw)
            else:
                _restore_record(emu, json.loads(raw))
            applied += 1
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("journal: skipped a damaged record (%s)", type(exc).__name__)
    return applied


def _restore_update(emu: Emulator, raw: bytes) -> None:
    _, bot_id, update_id, quoted_type, data = raw.split(b" ", 4)
    bot = emu.bots.get(int(bot_id))
    if bot is None:
        return
    uid = int(update_id)
    if not bot.history:
        bot.base_id = uid
        bot.pending_start = 0
    elif uid != bot.base_id + len(bot.history):
        return
    bot.append_update(data, urllib.parse.unquote(quoted_type.decode()))
    bot.next_update_id = max(bot.next_update_id, uid + 1)


def _restore_record(emu: Emulator, record: dict[str, Any]) -> None:
    kind = record["t"]
    if kind == "bot":
        bot = emu.bots.get(record["id"])
        if bot is None:
            emu.bots[record["id"]] = BotState(
                id=record["id"],
                token=record["token"],
                first_name=record["first_name"],
                username=record["username"],
                next_update_id=record["next"],
                base_id=record["base"],
            )
        else:
            bot.token, bot.first_name = record["token"], record["first_name"]
            bot.username = record["username"]
        return
    if kind == "reset":
        for bot in emu.bots.values():
            bot.reset()
            emu.retired_update_ids[bot.id] = bot.next_update_id
        if record.get("bots"):
            emu.bots.clear()
        return
    bot = emu.bots.get(record["b"])
    if bot is None:
        return
    if kind == "chat":
        spec = record["c"]
        chat = bot.chats.get(spec["id"]) or ChatState(spec["id"], spec["type"])
        chat.type = spec["type"]
        chat.update_from(spec)
        bot.chats[chat.id] = chat
    elif kind == "mid":
        chat = bot.chats.get(record["c"])
        if chat is not None:
            chat.last_message_id = max(chat.last_message_id, record["m"])
    elif kind == "off":
        bot.confirmed_offset = record["c"]
        bot.pending_start = min(max(record["p"] - bot.base_id, 0), len(bot.history))
    elif kind == "allow":
        bot.allowed_updates = record["a"]
    elif kind == "wh":
        bot.webhook = record["w"]


def snapshot(emu: Emulator) -> Iterable[bytes]:
    """The compact journal: current state only (history kept: it is the control record)."""
    for bot in emu.bots.values():
        yield (
            json_bytes(
                {
                    "t": "bot",
                    "id": bot.id,
                    "token": bot.token,
                    "first_name": bot.first_name,
                    "username": bot.username,
                    "next": bot.next_update_id,
                    "base": bot.base_id,
                }
            )
            + b"\n"
        )
        for chat in bot.chats.values():
            yield json_bytes({"t": "chat", "b": bot.id, "c": chat.to_record()}) + b"\n"
        if bot.allowed_updates is not None:
            yield json_bytes({"t": "allow", "b": bot.id, "a": bot.allowed_updates}) + b"\n"
        if bot.webhook is not None:
            yield json_bytes({"t": "wh", "b": bot.id, "w": bot.webhook}) + b"\n"
        for index, data in enumerate(bot.history):
            quoted = _quote_type(bot.history_types[index])
            yield b"u %d %d %s %s\n" % (bot.id, bot.base_id + index, quoted, data)
        yield (
            json_bytes(
                {"t": "off", "b": bot.id, "c": bot.confirmed_offset, "p": bot.first_pending_id()}
            )
            + b"\n"
        )


def stats_page(emu: Emulator, active_requests: int) -> str:
    """The -s/--http-stat-port page: tab-separated, like the real one (no tokens)."""
    now = time.time()
    lines = [
        f"uptime\t{now - emu.started:.3f}",
        f"bot_count\t{len(emu.bots)}",
        f"active_bot_count\t{sum(1 for b in emu.bots.values() if b.sent or b.history)}",
        f"rss\t{_rss_text()}",
        f"active_requests\t{active_requests}",
        f"emulator\t{EMULATOR_VERSION} (Bot API {API_VERSION})",
    ]
    for bot in emu.bots.values():
        lines += [
            "",
            f"id\t{bot.id}",
            f"username\t{bot.username}",
            f"head_update_id\t{bot.first_pending_id()}",
        ]
        if bot.webhook:
            lines.append(f"webhook\t{bot.webhook['url']}")
        if bot.pending_count:
            lines.append(f"tail_update_id\t{bot.next_update_id - 1}")
            lines.append(f"pending_update_count\t{bot.pending_count}")
    return "\n".join(lines) + "\n"


def _rss_text() -> str:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# --------------------------------------------------------------------------------------
# 9. HTTP/1.1 (asyncio.Protocol): keep-alive, Content-Length and chunked bodies, multipart
# --------------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass
class MultipartPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


DISPOSITION_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _disposition(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for match in DISPOSITION_PARAM_RE.finditer(value):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key.endswith("*"):
            key = key[:-1]
            _, _, encoded = raw.partition("''")
            raw = urllib.parse.unquote(encoded or raw)
        params[key] = raw
    return params


def parse_multipart(body: bytes, boundary: bytes) -> list[MultipartPart]:
    """multipart/form-data (RFC 7578) into parts; raises ValueError when malformed."""
    dash = b"--" + boundary
    pos = body.find(dash)
    if pos < 0:
        raise ValueError("boundary not found")
    pos += len(dash)
    parts: list[MultipartPart] = []
    while True:
        if body.startswith(b"--", pos):
            return parts
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip():
            raise ValueError("malformed boundary line")
        pos = line_end + 2
        end = body.find(b"\r\n" + dash, pos)
        if end < 0:
            raise ValueError("unterminated part")
        if body.startswith(b"\r\n", pos):
            head, data_start = b"", pos + 2
        else:
            head_end = body.find(b"\r\n\r\n", pos, end + 2)
            if head_end < 0:
                raise ValueError("part without header end")
            head, data_start = body[pos:head_end], head_end + 4
        parts.append(_multipart_part(head, body[data_start:end]))
        pos = end + 2 + len(dash)


def _multipart_part(head: bytes, data: bytes) -> MultipartPart:
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    disposition = _disposition(headers.get("content-disposition", ""))
    if "name" not in disposition:
        raise ValueError("part without a name")
    return MultipartPart(
        name=disposition["name"],
        filename=disposition.get("filename"),
        content_type=headers.get("content-type"),
        data=data,
    )


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    keep_alive: bool
    length: int
    chunked: bool
    expect_continue: bool


def parse_head(raw: bytes, max_body: Callable[[str], int]) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise HttpError(400, "Bad Request: invalid HTTP request line")
    method, target, version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise HttpError(400, "Bad Request: invalid HTTP header")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection
    if version == "HTTP/1.0":
        keep_alive = "keep-alive" in connection
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = 0
    if not chunked and "content-length" in headers:
        text = headers["content-length"].strip()
        if not text.isdigit():
            raise HttpError(400, "Bad Request: invalid Content-Length")
        length = int(text)
    if length > max_body(target):
        raise HttpError(413, "Request Entity Too Large")
    expect = headers.get("expect", "").lower() == "100-continue"
    return _Head(method, target, version, headers, keep_alive, length, chunked, expect)


class HttpConnection(asyncio.Protocol):
    """One client connection: requests handled strictly in order (pipelining allowed)."""

    def __init__(self, service: Service, kind: str) -> None:
        self.service = service
        self.kind = kind  # "api", "control" or "stat"
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buffer = bytearray()
        self.head: _Head | None = None
        self.chunks: list[bytes] = []
        self.chunk_pos = 0
        self.chunk_total = 0
        self.task: asyncio.Future[Response] | None = None
        self.current: Request | None = None
        self.closed = False
        self.paused = False

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.service.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.service.connections.discard(self)
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._process()
        elif len(self.buffer) > (1 << 20) and not self.paused and self.transport:
            self.transport.pause_reading()
            self.paused = True

    # requests ---------------------------------------------------------------------------
    def _process(self) -> None:
        while self.task is None and not self.closed:
            try:
                request = self._next_request()
            except HttpError as exc:
                self._write(error_response(exc.status, exc.description), keep_alive=False)
                return
            if request is None:
                return
            self._dispatch(request)

    def _max_body(self, target: str) -> int:
        if self.kind != "api" or target.startswith("/_emulator"):
            return 1 << 30
        limit = UPLOAD_LIMIT_LOCAL if self.service.opts.local else UPLOAD_LIMIT_REMOTE
        return limit + (1 << 20)

    def _next_request(self) -> Request | None:
        buffer = self.buffer
        if self.head is None:
            while buffer[:2] == b"\r\n":
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise HttpError(431, "Request Header Fields Too Large")
                return None
            self.head = parse_head(bytes(buffer[:end]), self._max_body)
            del buffer[: end + 4]
            head = self.head
            if head.expect_continue and (head.chunked or head.length > len(buffer)):
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        head = self.head
        body = self._take_chunked() if head.chunked else self._take_body(head.length)
        if body is None:
            return None
        self.head = None
        path, _, query = head.target.partition("?")
        return Request(
            method=head.method,
            path=urllib.parse.unquote(path),
            query=query,
            version=head.version,
            headers=head.headers,
            body=body,
            keep_alive=head.keep_alive,
            peer=self.peer,
        )

    def _take_body(self, length: int) -> bytes | None:
        if len(self.buffer) < length:
            return None
        if not length:
            return b""
        with memoryview(self.buffer) as view:
            body = bytes(view[:length])
        del self.buffer[:length]
        return body

    def _take_chunked(self) -> bytes | None:
        buffer = self.buffer
        while True:
            line_end = buffer.find(b"\r\n", self.chunk_pos)
            if line_end < 0:
                return None
            size_text = bytes(buffer[self.chunk_pos : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(400, "Bad Request: invalid chunk size") from None
            if size == 0:
                end = buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return None
                body = b"".join(self.chunks)
                del buffer[: end + 4]
                self.chunks, self.chunk_pos, self.chunk_total = [], 0, 0
                return body
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            self.chunks.append(bytes(buffer[start : start + size]))
            self.chunk_total += size
            assert self.head is not None
            if self.chunk_total > self._max_body(self.head.target):
                raise HttpError(413, "Request Entity Too Large")
            self.chunk_pos = start + size + 2

    def _dispatch(self, request: Request) -> None:
        self.current = request
        try:
            result = self.service.handle(request, self)
        except Exception:
            log.exception("internal error while handling %s", redact_text(request.path))
            result = error_response(500, "Internal Server Error")
        if isinstance(result, Response):
            self._finish(result)
            return
        task = asyncio.ensure_future(result)
        self.task = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Response]) -> None:
        if task is not self.task:
            return
        self.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("internal error: %s", redact_text(repr(error)))
            response = error_response(500, "Internal Server Error")
        else:
            response = task.result()
        self._finish(response)
        if self.paused and self.transport and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        self._process()

    # responses --------------------------------------------------------------------------
    def _finish(self, response: Response, force_close: bool = False) -> None:
        request, self.current = self.current, None
        if self.closed or self.transport is None:
            return
        if response.drop:
            self.transport.abort()
            self.closed = True
            return
        self.service.flush_journal()
        keep = (
            request is not None
            and request.keep_alive
            and not response.close
            and not force_close
            and not self.service.stopping
        )
        self._write(response, keep)

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None or self.closed:
            return
        lines = [
            f"HTTP/1.1 {response.status} {HTTP_REASONS.get(response.status, 'Unknown')}\r\n",
            f"Content-Type: {response.content_type}\r\n",
            f"Content-Length: {len(response.body)}\r\n",
            "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n",
        ]
        lines.extend(f"{name}: {value}\r\n" for name, value in response.headers)
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if len(response.body) < 65536:
            self.transport.write(head + response.body)
        else:
            self.transport.write(head)
            self.transport.write(response.body)
        if not keep_alive:
            self.transport.close()
            self.closed = True

    def shutdown(self, response: Response | None) -> None:
        """Stop: answer the in-flight request with ``response`` (if any), then close."""
        if self.closed or self.transport is None:
            return
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
        if self.current is not None and response is not None:
            self.service.emu.stats.count_response(response.status)
            self._finish(response, force_close=True)
        else:
            self.transport.close()
            self.closed = True


# --------------------------------------------------------------------------------------
# 10. the service: listeners, faults that take the API down, signals, main()
# --------------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Service:
    """The listeners and the process life cycle around one ``Emulator``."""

    def __init__(self, opts: Options, emu: Emulator) -> None:
        self.opts = opts
        self.emu = emu
        self.control = ControlApi(emu)
        self.connections: set[HttpConnection] = set()
        self.api_server: asyncio.AbstractServer | None = None
        self.other_servers: list[asyncio.AbstractServer] = []
        self.stopping = False
        self.stop_event = asyncio.Event()
        self.down_until = 0.0
        self.up_timer: asyncio.TimerHandle | None = None
        self.relisten_task: asyncio.Future[None] | None = None
        emu.on_down = self.go_down
        emu.on_up = self.come_up

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self._serve_api(bind_socket(self.opts.http_ip_address, self.opts.http_port))
        if self.opts.http_stat_port:
            sock = bind_socket(self.opts.http_stat_ip_address, self.opts.http_stat_port)
            self.other_servers.append(
                await loop.create_server(lambda: HttpConnection(self, "stat"), sock=sock)
            )
        if self.opts.control_port:
            sock = bind_socket("127.0.0.1", self.opts.control_port)
            self.other_servers.append(
                await loop.create_server(lambda: HttpConnection(self, "control"), sock=sock)
            )
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)

    async def _serve_api(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.api_server = await loop.create_server(lambda: HttpConnection(self, "api"), sock=sock)

    def handle(self, req: Request, conn: HttpConnection) -> Handled:
        if conn.kind == "stat":
            active = sum(1 for c in self.connections if c.current is not None)
            text = stats_page(self.emu, active)
            return Response(200, text.encode(), content_type="text/plain; charset=utf-8")
        if conn.kind == "control":
            return self.control.handle(req)
        if req.path == "/_emulator" or req.path.startswith("/_emulator/"):
            if not is_loopback(conn.peer):
                return control_error("the control API answers loopback clients only", 403)
            return self.control.handle(req)
        if not req.path.startswith("/"):
            return self.emu.counted(
                error_response(404, "Not Found: absolute URI is specified in the Request-Line")
            )
        return self.emu.handle_api(req)

    def flush_journal(self) -> None:
        if self.emu.journal is not None:
            self.emu.journal.flush()

    # faults: the API listener goes down and comes back ---------------------------------
    def go_down(self, duration: float) -> None:
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        self.down_until = max(self.down_until, time.monotonic() + duration)
        if self.api_server is not None:
            self.api_server.close()
            self.api_server = None
            log.warning("fault: API listener down for %.3f s", duration)
        for conn in list(self.connections):
            if conn.kind == "api":
                conn.shutdown(None)
        if self.up_timer is not None:
            self.up_timer.cancel()
        self.up_timer = loop.call_later(
            max(self.down_until - time.monotonic(), 0.0), self._up_when_due
        )

    def _up_when_due(self) -> None:
        self.up_timer = None
        if time.monotonic() + 0.001 >= self.down_until:
            self.come_up()

    def come_up(self) -> None:
        self.emu.faults = [f for f in self.emu.faults if f.mode != "down"]
        self.down_until = 0.0
        if self.up_timer is not None:
            self.up_timer.cancel()
            self.up_timer = None
        if self.api_server is not None or self.stopping:
            return
        try:
            sock = bind_socket(self.opts.http_ip_address, self.opts.http_port)
        except OSError as exc:
            log.error("fault: cannot listen again on the API port (%s); retrying", exc)
            asyncio.get_running_loop().call_later(0.2, self.come_up)
            return
        self.relisten_task = asyncio.ensure_future(self._serve_api(sock))
        log.warning("fault: API listener up again")

    # stopping ---------------------------------------------------------------------------
    def request_stop(self, signum: int) -> None:
        if self.stopping:
            log.warning("Receive stop signal again. Exit immediately...")
            self.flush_journal()
            os._exit(0)
        log.warning(
            "Stopping engine with uptime %.3f seconds by a signal (%s)",
            time.time() - self.emu.started,
            signal.Signals(signum).name,
        )
        self.stop_event.set()

    async def shutdown(self) -> None:
        """Answer pending requests 500 "Internal Server Error: restart", then close."""
        self.stopping = True
        if self.api_server is not None:
            self.api_server.close()
        for server in self.other_servers:
            server.close()
        restart = error_response(500, RESTART_DESCRIPTION)
        for conn in list(self.connections):
            conn.shutdown(restart if conn.kind == "api" else None)
        if self.emu.journal is not None:
            self.emu.journal.close()
        deadline = time.monotonic() + 2.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        log.warning("--------------------FINISH ENGINE--------------------")


def reopen_log_files() -> None:
    """SIGUSR1 (after an external log rotation): reopen the log file."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()


class StartupError(Exception):
    """Printed with the usage text; exit code 1 (like the real server's init errors)."""


def _check_writable(directory: str, message: str) -> None:
    try:
        fd, path = tempfile.mkstemp(dir=directory)
        os.close(fd)
        os.unlink(path)
    except OSError:
        raise StartupError(message) from None


def _change_user(username: str, groupname: str) -> None:
    import grp
    import pwd

    try:
        user = pwd.getpwnam(username)
        gid = grp.getgrnam(groupname).gr_gid if groupname else user.pw_gid
    except KeyError as exc:
        raise StartupError(f"Can't change effective user: unknown {exc}") from None
    if os.geteuid() == user.pw_uid and os.getegid() == gid:
        return
    try:
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(user.pw_uid)
    except OSError as exc:
        raise StartupError(f"Can't change effective user: {exc}") from None


def prepare_environment(opts: Options) -> tuple[str, str]:
    """Descriptor limit, user switch, working/temp directories, log path (as the real one)."""
    if opts.max_connections:
        import resource

        try:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            wanted = opts.max_connections
            new_hard = hard if hard == resource.RLIM_INFINITY or wanted <= hard else wanted
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
        except (OSError, ValueError) as exc:
            raise StartupError(f"Can't set file descriptor limit: {exc}") from None
    if opts.username:
        _change_user(opts.username, opts.groupname)
    workdir = os.path.realpath(opts.dir or ".")
    try:
        os.makedirs(workdir, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"Failed to create working directory: {exc}") from None
    _check_writable(
        workdir,
        f'Can\'t create files in the directory "{workdir}/". '
        "Use --dir option to specify a writable working directory",
    )
    temp_dir = opts.temp_dir
    if temp_dir:
        temp_dir = temp_dir if os.path.isabs(temp_dir) else os.path.join(workdir, temp_dir)
        try:
            os.makedirs(temp_dir, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"Can't set temporary directory: {exc}") from None
    else:
        temp_dir = tempfile.gettempdir()
    _check_writable(
        temp_dir,
        f'Can\'t create files in the directory "{temp_dir}". '
        "Use --temp-dir option to specify another directory for temporary files",
    )
    if opts.log and not os.path.isabs(opts.log):
        opts.log = os.path.join(workdir, opts.log)
    return workdir, temp_dir


def start_tokens(opts: Options, env: dict[str, str]) -> list[str]:
    from_env = [t.strip() for t in env.get("EMULATOR_BOT_TOKENS", "").split(",") if t.strip()]
    return opts.bots + from_env


def load_state(emu: Emulator, journal: Journal) -> None:
    started = time.monotonic()
    applied = restore(emu, journal.read_lines())
    journal.rewrite(snapshot(emu))
    journal.open()
    pending = sum(bot.pending_count for bot in emu.bots.values())
    log.warning(
        "Loaded %d journal records (%d bots, %d pending updates) in %.3f seconds",
        applied,
        len(emu.bots),
        pending,
        time.monotonic() - started,
    )


async def serve(opts: Options, workdir: str, temp_dir: str, tokens: list[str]) -> int:
    journal = Journal(os.path.join(workdir, JOURNAL_NAME))
    emu = Emulator(opts, temp_dir, journal)
    load_state(emu, journal)
    for token in tokens:
        try:
            emu.register_bot(token)
        except TokenError as exc:
            log.critical("invalid bot token in --bot/EMULATOR_BOT_TOKENS: %s", exc.description)
            journal.close()
            return 1
    journal.flush()
    service = Service(opts, emu)
    try:
        await service.start()
    except OSError as exc:
        log.critical("Can't listen: %s", exc)
        sys.stderr.write(f"Can't listen: {exc}\n")
        journal.close()
        return 1
    log.warning(
        "Bot API %s server started (emulator %s) on %s:%d%s%s",
        API_VERSION,
        EMULATOR_VERSION,
        opts.http_ip_address,
        opts.http_port,
        f", control API on 127.0.0.1:{opts.control_port}" if opts.control_port else "",
        ", local mode" if opts.local else "",
    )
    await service.stop_event.wait()
    await service.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    program = sys.argv[0] if sys.argv and sys.argv[0] else "telegram-bot-api"
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
