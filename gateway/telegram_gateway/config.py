"""Gateway settings: read from the environment once, validated once.

Every setting is declared in ``SETTINGS`` (name, default, parser, help). ``load_settings``
parses all of them and raises one :class:`ConfigError` whose message names *every* missing
or malformed setting, one per line, so an operator fixes the env file in one pass. Secret
values never appear in the error text, in ``repr`` or in logs.

To add a setting: append a :class:`Setting` to ``SETTINGS``, add the attribute to
:class:`Settings`, and document it in README.md and in the telegram_gateway role
(defaults + argument_specs) when operators should set it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from telegram_gateway.errors import ConfigError

TOKEN_RE = re.compile(r"^(?P<bot_id>[0-9]{1,20}):(?P<secret>[A-Za-z0-9_-]{24,})$")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: seconds an idle long poll may come back late before /healthz calls its poller stalled
STALL_SLACK = 10.0


@dataclass(frozen=True)
class BotConfig:
    """One bot: its public id, an optional configured name, and its token (never printed)."""

    bot_id: int
    token: str = field(repr=False)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or str(self.bot_id)


@dataclass(frozen=True)
class Settings:
    telegram_api_url: str
    bots: tuple[BotConfig, ...]
    nats_url: str
    nats_user: str | None
    nats_password: str | None = field(repr=False)
    nats_creds: str | None
    api_token: str = field(repr=False)
    routes_file: Path | None
    state_dir: Path
    log_level: str
    stream_name: str
    nats_replicas: int
    host_name: str
    stream_max_age: float
    stream_duplicate_window: float
    poll_timeout: int
    poll_limit: int
    allowed_updates: tuple[str, ...]
    botapi_timeout: float
    publish_timeout: float
    poller_stall_after: float
    lease_ttl: float
    health_probe_interval: float
    send_timeout: float
    send_max_wait: float
    send_pacing: bool
    idempotency_ttl: float
    idempotency_max_bytes: int
    upload_concurrency: int = 4
    upload_max_bytes: int = 4 * 1024**3
    # local files sent as media only from here (empty: none); see telegram_gateway.media
    media_dirs: tuple[Path, ...] = ()
    # the Bot API server's --dir (received files are read only below it)
    telegram_api_dir: Path = Path("/var/lib/telegram-bot-api")
    # received files agents fetch: the largest one stored in TELEGRAM_FILES, how long it is
    # kept and the bucket's size (see telegram_gateway.files)
    files_max_bytes: int = 100 * 1024**2
    files_ttl: float = 86400.0
    files_bucket_max_bytes: int = 1024**3

    def bot(self, ref: str | int | None) -> BotConfig | None:
        """The bot named by id or configured name; the only bot when ``ref`` is None."""
        if ref is None or ref == "":
            return self.bots[0] if len(self.bots) == 1 else None
        for bot in self.bots:
            if str(ref) == str(bot.bot_id) or (bot.name is not None and ref == bot.name):
                return bot
        return None


Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Setting:
    env: str
    attr: str
    parse: Parser
    default: str | None  # None = required
    help: str
    secret: bool = False


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8081")
    return value.rstrip("/")


def _nats_url(value: str) -> str:
    for item in value.split(","):
        parts = urlsplit(item.strip())
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ValueError("must be nats://host:port (comma separated for several)")
    return value


def _bots(value: str) -> tuple[BotConfig, ...]:
    bots: list[BotConfig] = []
    for position, raw in enumerate(value.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        name: str | None = None
        if "=" in item:
            name, item = (part.strip() for part in item.split("=", 1))
            if not NAME_RE.match(name):
                raise ValueError(f"entry {position}: bot name must match {NAME_RE.pattern}")
        match = TOKEN_RE.match(item)
        if not match:
            raise ValueError(
                f"entry {position} is not a bot token (<bot id digits>:<secret of 24+ "
                "characters A-Z a-z 0-9 _ ->)"
            )
        bots.append(BotConfig(bot_id=int(match["bot_id"]), token=item, name=name))
    if not bots:
        raise ValueError("no bot token given")
    ids = [bot.bot_id for bot in bots]
    if len(set(ids)) != len(ids):
        raise ValueError("the same bot id appears twice")
    names = [bot.name for bot in bots if bot.name]
    if len(set(names)) != len(names):
        raise ValueError("the same bot name appears twice")
    return tuple(bots)


def _optional(value: str) -> str | None:
    return value or None


def _api_token(value: str) -> str:
    if len(value) < 16:
        raise ValueError("must be at least 16 characters")
    return value


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def _absolute_dir(value: str) -> Path:
    if not value.startswith("/") or "\x00" in value:
        raise ValueError("must be an absolute directory such as /var/lib/telegram-bot-api")
    return Path(os.path.normpath(value))


def _media_dirs(value: str) -> tuple[Path, ...]:
    """Colon separated absolute directories; empty: the default, ``<GATEWAY_STATE_DIR>/outbox``
    (filled in by :func:`load_settings`)."""
    dirs: list[Path] = []
    for position, raw in enumerate(value.split(":"), start=1):
        item = raw.strip()
        if not item:
            continue
        if not item.startswith("/") or "\x00" in item:
            raise ValueError(
                f"entry {position} ({item[:64]!r}) is not an absolute directory; give "
                "colon separated absolute directories such as /var/lib/telegram-gateway/outbox"
            )
        if os.path.normpath(item) in ("/", "//"):
            raise ValueError(f"entry {position} is the root directory: it would allow every file")
        dirs.append(Path(os.path.normpath(item)))
    return tuple(dict.fromkeys(dirs))


def _number(low: float, high: float) -> Parser:
    def parse(value: str) -> float:
        number = float(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return number

    return parse


def _integer(low: int, high: int) -> Parser:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _host_name(value: str) -> str:
    """This host's name in NATS (worker names, Nats-Msg-Id, Bot API server instances): the
    machine's host name when empty, with every character other than A-Z a-z 0-9 _ - as _."""
    if not value:
        return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValueError("must be 1-64 characters A-Z a-z 0-9 _ - (or empty: the host name)")
    return value


def _stream_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValueError("must be 1-64 characters A-Z a-z 0-9 _ -")
    return value


# Every Update field a bot can receive (Bot API 10.0, as pyTelegramBotAPI 4.37 lists them).
# Telegram's own default leaves out chat_member, message_reaction and message_reaction_count,
# so the poller always sends an explicit list.
ALL_UPDATE_TYPES: tuple[str, ...] = (
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
    "managed_bot",
    "guest_message",
    "subscription",
    "stopped_message_generation",
)


def _allowed_updates(value: str) -> tuple[str, ...]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names or names == ["all"]:
        return ALL_UPDATE_TYPES
    unknown = [name for name in names if name not in ALL_UPDATE_TYPES]
    if unknown:
        raise ValueError(
            f"names unknown update type(s) {', '.join(unknown)}; use 'all' or a comma "
            f"separated list of {', '.join(ALL_UPDATE_TYPES)}"
        )
    return tuple(dict.fromkeys(names))


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "TELEGRAM_API_URL",
        "telegram_api_url",
        _http_url,
        "http://127.0.0.1:8081",
        "base URL of the local Bot API server",
    ),
    Setting(
        "TELEGRAM_BOT_TOKENS",
        "bots",
        _bots,
        None,
        "comma separated bot tokens, each optionally prefixed name=",
        secret=True,
    ),
    Setting("NATS_URL", "nats_url", _nats_url, "nats://127.0.0.1:4222", "NATS server URL(s)"),
    Setting("NATS_USER", "nats_user", _optional, "", "NATS user name"),
    Setting("NATS_PASSWORD", "nats_password", _optional, "", "NATS password", secret=True),
    Setting("NATS_CREDS", "nats_creds", _optional, "", "path of a NATS .creds file"),
    Setting(
        "GATEWAY_API_TOKEN",
        "api_token",
        _api_token,
        None,
        "bearer token that /send requires (16+ characters)",
        secret=True,
    ),
    Setting(
        "GATEWAY_ROUTES_FILE",
        "routes_file",
        _optional_path,
        "",
        "YAML routing rules file (empty: no extra routes)",
    ),
    Setting(
        "GATEWAY_STATE_DIR",
        "state_dir",
        Path,
        "/var/lib/telegram-gateway",
        "writable state directory (metrics, upload spool, default outbox)",
    ),
    Setting("GATEWAY_LOG_LEVEL", "log_level", _log_level, "INFO", "log level"),
    Setting(
        "GATEWAY_STREAM_NAME",
        "stream_name",
        _stream_name,
        "TELEGRAM",
        "JetStream stream capturing telegram.in.>",
    ),
    Setting(
        "GATEWAY_NATS_REPLICAS",
        "nats_replicas",
        _integer(1, 5),
        "1",
        "copies JetStream keeps of the stream, the object store and every Key-Value bucket "
        "(1 on one host; 3 on a 3-node cluster); an existing stream or bucket is changed to it",
    ),
    Setting(
        "GATEWAY_HOST_NAME",
        "host_name",
        _host_name,
        "",
        "this host's name among the gateway's hosts (the Bot API server it polls): in worker "
        "names and each update's Nats-Msg-Id; empty = the machine's host name",
    ),
    Setting(
        "GATEWAY_STREAM_MAX_AGE",
        "stream_max_age",
        _number(0, 10 * 365 * 86400),
        str(7 * 86400),
        "seconds a stored update is kept (0 = forever)",
    ),
    Setting(
        "GATEWAY_STREAM_DUPLICATE_WINDOW",
        "stream_duplicate_window",
        _number(120, 86400),
        "600",
        "JetStream de-duplication window, seconds (>= 120)",
    ),
    Setting(
        "GATEWAY_POLL_TIMEOUT",
        "poll_timeout",
        _integer(0, 50),
        "50",
        "getUpdates long-poll timeout, seconds (50 is the Bot API server's maximum)",
    ),
    Setting("GATEWAY_POLL_LIMIT", "poll_limit", _integer(1, 100), "100", "getUpdates batch size"),
    Setting(
        "GATEWAY_ALLOWED_UPDATES",
        "allowed_updates",
        _allowed_updates,
        "all",
        "update types getUpdates asks for: 'all' or a comma separated list",
    ),
    Setting(
        "GATEWAY_BOTAPI_TIMEOUT",
        "botapi_timeout",
        _number(0.1, 600),
        "10",
        "timeout of one Bot API call other than long polling, seconds",
    ),
    Setting(
        "GATEWAY_PUBLISH_TIMEOUT",
        "publish_timeout",
        _number(0.1, 60),
        "5",
        "timeout of one JetStream publish acknowledgement, seconds",
    ),
    Setting(
        "GATEWAY_POLLER_STALL_AFTER",
        "poller_stall_after",
        _number(1, 3600),
        "90",
        "seconds without a successful getUpdates before /healthz calls a poller stalled "
        f"(at least GATEWAY_POLL_TIMEOUT + {STALL_SLACK:g})",
    ),
    Setting(
        "GATEWAY_LEASE_TTL",
        "lease_ttl",
        _number(2, 60),
        "3",
        "how long a worker's lease in the TELEGRAM_OWNERS bucket outlives its last renewal "
        "(renewed every third of it), seconds: after a crash another worker polls its bots "
        "within about this long",
    ),
    Setting(
        "GATEWAY_HEALTH_PROBE_INTERVAL",
        "health_probe_interval",
        _number(0.1, 300),
        "5",
        "how often getMe probes the Bot API for each bot for /healthz, seconds (at most 2 "
        "getMe per second per worker: with many bots, each bot every bots / 2 s)",
    ),
    Setting(
        "GATEWAY_SEND_TIMEOUT",
        "send_timeout",
        _number(0.1, 600),
        "30",
        "upper bound of one outbound Bot API call before 504, seconds",
    ),
    Setting(
        "GATEWAY_SEND_MAX_WAIT",
        "send_max_wait",
        _number(0, 3600),
        "10",
        "longest a send may queue for Telegram's limits before 429, seconds",
    ),
    Setting(
        "GATEWAY_SEND_PACING",
        "send_pacing",
        _boolean,
        "true",
        "pace sends to Telegram's limits (turn off only for benchmarks)",
    ),
    Setting(
        "GATEWAY_IDEMPOTENCY_TTL",
        "idempotency_ttl",
        _number(1, 30 * 86400),
        "86400",
        "how long an Idempotency-Key is remembered, seconds",
    ),
    Setting(
        "GATEWAY_IDEMPOTENCY_MAX_BYTES",
        "idempotency_max_bytes",
        _integer(1024**2, 64 * 1024**3),
        str(64 * 1024**2),
        "bytes the Key-Value bucket TELEGRAM_IDEMPOTENCY may hold (1 MiB - 64 GiB; full: "
        "requests with a new Idempotency-Key get 503)",
    ),
    Setting(
        "GATEWAY_UPLOAD_CONCURRENCY",
        "upload_concurrency",
        _integer(1, 1024),
        "4",
        "multipart uploads on /send at once, all workers together (more: 503)",
    ),
    Setting(
        "GATEWAY_UPLOAD_MAX_BYTES",
        "upload_max_bytes",
        _integer(1024**2, 1024**5),
        str(4 * 1024**3),
        "bytes that uploads in progress may take in <GATEWAY_STATE_DIR>/uploads (>= 1 MiB)",
    ),
    Setting(
        "GATEWAY_MEDIA_DIRS",
        "media_dirs",
        _media_dirs,
        "",
        "colon separated absolute directories local files are sent from "
        "(empty: <GATEWAY_STATE_DIR>/outbox)",
    ),
    Setting(
        "TELEGRAM_API_DIR",
        "telegram_api_dir",
        _absolute_dir,
        "/var/lib/telegram-bot-api",
        "the Bot API server's --dir (absolute); received files are read only below it",
    ),
    Setting(
        "GATEWAY_FILES_MAX_BYTES",
        "files_max_bytes",
        _integer(1, 2000 * 1024**2),
        str(100 * 1024**2),
        "largest received file stored in the Object Store TELEGRAM_FILES, bytes",
    ),
    Setting(
        "GATEWAY_FILES_TTL",
        "files_ttl",
        _number(60, 365 * 86400),
        "86400",
        "seconds a file stays in TELEGRAM_FILES (the bucket's max age)",
    ),
    Setting(
        "GATEWAY_FILES_BUCKET_MAX_BYTES",
        "files_bucket_max_bytes",
        _integer(1024**2, 1024**5),
        str(1024**3),
        "bytes TELEGRAM_FILES may hold in all (>= GATEWAY_FILES_MAX_BYTES)",
    ),
)


def load_settings(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Parse every setting from ``env`` (then ``overrides`` by attribute name); one error lists all
    problems."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None or (raw.strip() == "" and setting.default is None):
            if setting.default is None:
                problems.append(f"{setting.env} is required: {setting.help}")
                continue
            raw = setting.default
        try:
            values[setting.attr] = setting.parse(raw.strip())
        except ValueError as exc:
            shown = "" if setting.secret else f" (got {raw.strip()!r})"
            problems.append(f"{setting.env} {_reason(exc)}{shown}")
    if overrides:
        known = {f.name for f in fields(Settings)}
        for key, value in overrides.items():
            if key not in known:
                problems.append(f"unknown setting override {key!r}")
            else:
                values[key] = value
    if not problems and not values.get("media_dirs"):
        values["media_dirs"] = (Path(os.path.abspath(values["state_dir"])) / "outbox",)
    if not problems and values["files_bucket_max_bytes"] < values["files_max_bytes"]:
        problems.append(
            "GATEWAY_FILES_BUCKET_MAX_BYTES must be at least GATEWAY_FILES_MAX_BYTES "
            f"({values['files_bucket_max_bytes']} < {values['files_max_bytes']})"
        )
    if not problems and values["poller_stall_after"] < values["poll_timeout"] + STALL_SLACK:
        problems.append(
            f"GATEWAY_POLLER_STALL_AFTER must be at least GATEWAY_POLL_TIMEOUT + {STALL_SLACK:g} "
            f"({values['poll_timeout'] + STALL_SLACK:g}): an idle long poll returns only after "
            "GATEWAY_POLL_TIMEOUT seconds, and /healthz would call it stalled"
        )
    if not problems and bool(values.get("nats_user")) != bool(values.get("nats_password")):
        problems.append("NATS_USER and NATS_PASSWORD must be set together")
    if problems:
        raise ConfigError("invalid gateway settings: " + "; ".join(problems))
    return Settings(**values)


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith(("invalid literal", "could not convert")):
        return "must be a number"
    return text
