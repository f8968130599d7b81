"""Routing rules: extra copies of inbound updates for agent subjects.

Every update goes to JetStream on ``telegram.in.<bot_id>.<update_type>`` regardless of the
rules. A rule adds a *core* NATS publish (same payload, same headers) to each of its
``subjects`` when all of its ``match`` conditions hold; a list-valued condition means any of
its values. The file (``GATEWAY_ROUTES_FILE``) is YAML::

    routes:
      - name: ask-helper               # required, unique; used in logs and metrics
        match:                         # optional; no conditions = every update
          bot: support                 # bot id or configured name (or a list)
          update_type: message         # Update field name (or a list)
          chat_id: [-1001234567890]    # integer (or a list)
          chat_type: supergroup        # private | group | supergroup | channel (or a list)
          command: /ask                # "/ask" and "/ask@anybot" at the start of the text
          text_regex: "(?i)urgent"     # Python regex searched in the text or caption
        subjects: [agents.helper.inbox]
        store_files: true              # optional: store the update's files in TELEGRAM_FILES
                                       # (key: file_unique_id) before the copy is sent

An invalid file stops start-up with a :class:`ConfigError` naming the rule (position and
name) and the field. Nothing here does I/O after loading, and nothing imports Flask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from telebot.util import extract_command

from telegram_gateway.config import BotConfig
from telegram_gateway.errors import ConfigError
from telegram_gateway.updates import UpdateInfo

CHAT_TYPES = ("private", "group", "supergroup", "channel", "sender")
MATCH_FIELDS = ("bot", "update_type", "chat_id", "chat_type", "command", "text_regex")
RULE_FIELDS = ("name", "match", "subjects", "store_files")
_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,32}$")
_UPDATE_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")


@dataclass(frozen=True)
class Match:
    """All conditions ANDed; ``None`` means "any"."""

    bots: frozenset[int] | None = None
    update_types: frozenset[str] | None = None
    chat_ids: frozenset[int] | None = None
    chat_types: frozenset[str] | None = None
    commands: tuple[str, ...] | None = None
    text_regex: re.Pattern[str] | None = None

    def matches(self, info: UpdateInfo) -> bool:
        if self.bots is not None and info.bot_id not in self.bots:
            return False
        if self.update_types is not None and info.update_type not in self.update_types:
            return False
        if self.chat_ids is not None and info.chat_id not in self.chat_ids:
            return False
        if self.chat_types is not None and info.chat_type not in self.chat_types:
            return False
        if self.commands is not None and command_of(info.text) not in self.commands:
            return False
        return self.text_regex is None or (
            info.text is not None and self.text_regex.search(info.text) is not None
        )


@dataclass(frozen=True)
class Route:
    name: str
    match: Match
    subjects: tuple[str, ...]
    store_files: bool = False


def command_of(text: str | None) -> str | None:
    """``/ask`` for text starting with ``/ask`` or ``/ask@somebot`` (followed by the end or
    white space); None otherwise. pyTelegramBotAPI's ``extract_command`` takes the first word
    apart; Telegram's command syntax (``_COMMAND``) decides whether it is a command."""
    name = extract_command(text) if text else None
    if name is None:
        return None
    command = "/" + name
    return command if _COMMAND.match(command) else None


class Router:
    """The loaded rules; :meth:`subjects_for` lists the extra subjects for one update."""

    def __init__(self, routes: Sequence[Route] = ()) -> None:
        self.routes = tuple(routes)

    def __len__(self) -> int:
        return len(self.routes)

    def targets(self, info: UpdateInfo) -> list[tuple[Route, str]]:
        """``(route, subject)`` for every matching rule's subjects, in file order; a subject
        named by several matching rules gets one copy (the first rule's)."""
        found: list[tuple[Route, str]] = []
        seen: set[str] = set()
        for route in self.routes:
            if route.match.matches(info):
                for subject in route.subjects:
                    if subject not in seen:
                        seen.add(subject)
                        found.append((route, subject))
        return found


# ---- loading -------------------------------------------------------------------------------


class _RuleError(ValueError):
    pass


def load_routes(path: Path | None, bots: Iterable[BotConfig]) -> Router:
    """Read and validate the rules file; no file configured means no extra routes."""
    if path is None:
        return Router()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"GATEWAY_ROUTES_FILE {path}: cannot read it ({exc.strerror or exc}); "
            "fix the path or unset GATEWAY_ROUTES_FILE"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"GATEWAY_ROUTES_FILE {path}: not valid YAML: {exc}") from None
    return Router(parse_routes(document, bots, source=f"GATEWAY_ROUTES_FILE {path}"))


def parse_routes(
    document: Any, bots: Iterable[BotConfig], source: str = "routing rules"
) -> list[Route]:
    """Validate a parsed rules document; :class:`ConfigError` names the rule and field."""
    if document is None:
        return []
    if not isinstance(document, Mapping) or set(document) - {"routes"}:
        raise ConfigError(f"{source}: the top level must be a mapping with one key, 'routes'")
    rules = document.get("routes") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{source}: 'routes' must be a list of rules")
    bot_list = list(bots)
    routes: list[Route] = []
    names: set[str] = set()
    for index, rule in enumerate(rules, start=1):
        label = f"rule {index}"
        if isinstance(rule, Mapping) and isinstance(rule.get("name"), str):
            label += f" ({rule['name']!r})"
        try:
            route = _parse_rule(rule, bot_list)
        except _RuleError as exc:
            raise ConfigError(f"{source}: {label}: {exc}") from None
        if route.name in names:
            raise ConfigError(f"{source}: {label}: name: {route.name!r} is used by another rule")
        names.add(route.name)
        routes.append(route)
    return routes


def _parse_rule(rule: Any, bots: list[BotConfig]) -> Route:
    if not isinstance(rule, Mapping):
        raise _RuleError("must be a mapping with name, match and subjects")
    unknown = [str(key) for key in rule if key not in RULE_FIELDS]
    if unknown:
        raise _RuleError(f"{unknown[0]}: unknown field (allowed: {', '.join(RULE_FIELDS)})")
    name = rule.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _RuleError("name: required, a non-empty string")
    match = rule.get("match") or {}
    if not isinstance(match, Mapping):
        raise _RuleError("match: must be a mapping of conditions")
    subjects = _list(rule.get("subjects"))
    if not subjects:
        raise _RuleError("subjects: required, a non-empty list of NATS subjects")
    for subject in subjects:
        if not isinstance(subject, str) or not _SUBJECT.match(subject):
            raise _RuleError(
                f"subjects: {subject!r} is not a NATS subject for publishing "
                "(dot separated tokens, no spaces or wildcards)"
            )
        if subject.startswith("telegram.in.") or subject == "telegram.in":
            raise _RuleError(
                f"subjects: {subject!r} is inside telegram.in.>, the stream's own subjects"
            )
    store_files = rule.get("store_files", False)
    if not isinstance(store_files, bool):
        raise _RuleError("store_files: must be true or false")
    return Route(
        name=name.strip(),
        match=_parse_match(match, bots),
        subjects=tuple(subjects),
        store_files=store_files,
    )


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _parse_match(match: Mapping[str, Any], bots: list[BotConfig]) -> Match:
    unknown = [str(key) for key in match if key not in MATCH_FIELDS]
    if unknown:
        raise _RuleError(
            f"match.{unknown[0]}: unknown condition (allowed: {', '.join(MATCH_FIELDS)})"
        )

    def values(key: str) -> list[Any] | None:
        if key not in match:
            return None
        items = _list(match[key])
        if not items:
            raise _RuleError(f"match.{key}: must not be empty (leave it out to match any)")
        return items

    result: dict[str, Any] = {}
    if (items := values("bot")) is not None:
        result["bots"] = frozenset(_bot_id(item, bots) for item in items)
    if (items := values("update_type")) is not None:
        for item in items:
            if not isinstance(item, str) or not _UPDATE_TYPE.match(item):
                raise _RuleError(
                    f"match.update_type: {item!r} is not an Update field name such as "
                    "message or callback_query"
                )
        result["update_types"] = frozenset(items)
    if (items := values("chat_id")) is not None:
        for item in items:
            if not isinstance(item, int) or isinstance(item, bool):
                raise _RuleError(f"match.chat_id: {item!r} is not an integer chat id")
        result["chat_ids"] = frozenset(items)
    if (items := values("chat_type")) is not None:
        for item in items:
            if item not in CHAT_TYPES:
                raise _RuleError(f"match.chat_type: {item!r} is not one of {', '.join(CHAT_TYPES)}")
        result["chat_types"] = frozenset(items)
    if (items := values("command")) is not None:
        for item in items:
            if not isinstance(item, str) or not _COMMAND.match(item):
                raise _RuleError(
                    f"match.command: {item!r} is not a bot command such as /ask "
                    "(a slash and 1-32 letters, digits or _)"
                )
        result["commands"] = tuple(items)
    if "text_regex" in match:
        pattern = match["text_regex"]
        if not isinstance(pattern, str) or not pattern:
            raise _RuleError("match.text_regex: must be a non-empty string")
        try:
            result["text_regex"] = re.compile(pattern)
        except re.error as exc:
            raise _RuleError(f"match.text_regex: not a valid regular expression: {exc}") from None
    return Match(**result)


def _bot_id(ref: Any, bots: list[BotConfig]) -> int:
    for bot in bots:
        if (isinstance(ref, int) and not isinstance(ref, bool) and ref == bot.bot_id) or (
            isinstance(ref, str) and ref in (str(bot.bot_id), bot.name)
        ):
            return bot.bot_id
    known = ", ".join(bot.label for bot in bots)
    raise _RuleError(f"match.bot: {ref!r} is not a configured bot (configured: {known})")
