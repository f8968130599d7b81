"""The command line: the real server's option set (telegram-bot-api 10.0), parsed like
td's ``OptionParser`` (``--opt=value``, ``--opt value``, ``-p 8081``, ``-p8081``), and its
``--help`` text."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field


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
