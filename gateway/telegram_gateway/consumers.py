"""Agents' consumers of the stream: durable *pull* consumers, created by the gateway on request.

An agent reads ``telegram.in.>`` through a JetStream consumer of the stream ``TELEGRAM``. It may
not create one itself: a consumer may be a *push* consumer, and JetStream delivers a push
consumer's messages to whatever ``deliver_subject`` its creator named, without checking that
the creator may publish there (an agent could have the stream replay stored updates onto
another agent's subject, or into ``telegram.in.*`` itself). So the role gives agents no
``$JS.API.CONSUMER.CREATE`` at all; they ask the gateway:

``telegram.consumers.create`` with ``{"name": "my-agent", "filter_subjects":
["telegram.in.123.message"], ...}`` -> the gateway creates (or updates) the durable pull
consumer ``my-agent`` (explicit acks, no deliver subject) and answers
``{"ok": true, "result": {"stream": "TELEGRAM", "name": "my-agent", ...}}``. The agent then
binds to it (nats-py: ``js.pull_subscribe_bind("my-agent", stream="TELEGRAM")``), fetches and
acks, which the role allows for every consumer of the stream.

``telegram.consumers.delete`` with ``{"name": "my-agent"}`` removes one. Optional settings:
``deliver_policy`` (``all`` default, ``last``, ``new``, ``last_per_subject``,
``by_start_sequence`` with ``opt_start_seq``), ``ack_wait`` (seconds, 30), ``max_deliver``
(-1: unlimited), ``max_ack_pending`` (1000), ``inactive_threshold`` (seconds after which an
unused consumer is removed by the server; none by default). Anything else, a
``deliver_subject`` above all, is a 400 naming the field.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from telegram_gateway.bus import INBOUND_SUBJECTS, Bus, Request
from telegram_gateway.config import Settings
from telegram_gateway.errors import BusError, BusUnavailable, ConsumerRefused
from telegram_gateway.health import Check

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "telegram.consumers"
QUEUE_GROUP = "telegram-gateway"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FILTERS = 16
DELIVER_POLICIES = {
    "all": DeliverPolicy.ALL,
    "last": DeliverPolicy.LAST,
    "new": DeliverPolicy.NEW,
    "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
    "by_start_sequence": DeliverPolicy.BY_START_SEQUENCE,
}
FIELDS = {
    "name",
    "filter_subjects",
    "deliver_policy",
    "opt_start_seq",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "inactive_threshold",
}
_TOKEN_RE = re.compile(r"^[^\s.*>]+$")


class BadField(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


def _number(body: dict[str, Any], field: str, low: float, high: float, default: Any) -> Any:
    value = body.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadField(field, f"must be a number from {low:g} to {high:g}")
    return value


def _filters(value: Any) -> list[str]:
    if value is None:
        return [INBOUND_SUBJECTS]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FILTERS:
        raise BadField("filter_subjects", f"must be a list of 1 to {MAX_FILTERS} subjects")
    subjects: list[str] = []
    for subject in value:
        tokens = subject.split(".") if isinstance(subject, str) else []
        last = len(tokens) - 1
        valid = (
            len(tokens) >= 3
            and tokens[:2] == ["telegram", "in"]
            and all(
                _TOKEN_RE.match(token) or token == "*" or (token == ">" and index == last)
                for index, token in enumerate(tokens[2:], start=2)
            )
        )
        if not valid:
            raise BadField(
                "filter_subjects",
                f"{str(subject)[:80]!r} is not a subject under {INBOUND_SUBJECTS} "
                "(e.g. telegram.in.<bot_id>.message, telegram.in.*.callback_query)",
            )
        subjects.append(subject)
    return subjects


def consumer_config(body: Any) -> ConsumerConfig:
    """The pull consumer a ``telegram.consumers.create`` body asks for; :class:`BadField`
    names what is wrong."""
    if not isinstance(body, dict):
        raise BadField("body", "must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if "deliver_subject" in body or "deliver_group" in body:
        raise BadField(
            "deliver_subject",
            "push consumers are not offered; this creates a pull consumer: bind to it and "
            "fetch (nats-py: js.pull_subscribe_bind(name, stream=...))",
        )
    if unknown:
        raise BadField(unknown[0], f"unknown field (known: {', '.join(sorted(FIELDS))})")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadField("name", "must be 1-64 letters, digits, '-' or '_'")
    policy_name = body.get("deliver_policy", "all")
    if policy_name not in DELIVER_POLICIES:
        raise BadField("deliver_policy", f"must be one of {', '.join(DELIVER_POLICIES)}")
    start = body.get("opt_start_seq")
    if policy_name == "by_start_sequence":
        if isinstance(start, bool) or not isinstance(start, int) or start < 1:
            raise BadField("opt_start_seq", "must be a stream sequence >= 1 for by_start_sequence")
    elif start is not None:
        raise BadField("opt_start_seq", "only with deliver_policy by_start_sequence")
    max_deliver = body.get("max_deliver", -1)
    if (
        isinstance(max_deliver, bool)
        or not isinstance(max_deliver, int)
        or not (max_deliver == -1 or 1 <= max_deliver <= 1000)
    ):
        raise BadField("max_deliver", "must be -1 (unlimited) or 1 to 1000")
    max_ack_pending = body.get("max_ack_pending", 1000)
    if (
        isinstance(max_ack_pending, bool)
        or not isinstance(max_ack_pending, int)
        or not 1 <= max_ack_pending <= 10000
    ):
        raise BadField("max_ack_pending", "must be 1 to 10000")
    filters = _filters(body.get("filter_subjects"))
    return ConsumerConfig(
        durable_name=name,
        name=name,
        deliver_policy=DELIVER_POLICIES[policy_name],
        opt_start_seq=start,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=float(_number(body, "ack_wait", 1, 3600, 30)),
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        inactive_threshold=_number(body, "inactive_threshold", 1, 30 * 86400, None),
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )


class ConsumerService:
    """Answers ``telegram.consumers.create`` and ``.delete``; a gateway component."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus

    def start(self) -> None:
        self.bus.serve(f"{SUBJECT_PREFIX}.create", self.create, QUEUE_GROUP)
        self.bus.serve(f"{SUBJECT_PREFIX}.delete", self.delete, QUEUE_GROUP)

    def stop(self) -> None:
        pass

    def checks(self) -> dict[str, Check]:
        return {}

    def create(self, request: Request) -> bytes:
        try:
            config = consumer_config(_body(request))
        except BadField as exc:
            return _error(400, f"Bad Request: {exc}")
        try:
            info = self.bus.add_pull_consumer(config)
        except ConsumerRefused as exc:
            return _error(409, f"Conflict: {exc}")
        except BusError as exc:
            return _error(503, f"Service Unavailable: {exc}", retry_after=1)
        logger.info(
            "pull consumer %s on %s for %s",
            config.durable_name,
            self.settings.stream_name,
            ", ".join(config.filter_subjects or [config.filter_subject or ""]),
        )
        return _answer({"ok": True, "result": info})

    def delete(self, request: Request) -> bytes:
        try:
            body = _body(request)
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise BadField("name", "must be 1-64 letters, digits, '-' or '_'")
        except BadField as exc:
            return _error(400, f"Bad Request: {exc}")
        try:
            deleted = self.bus.delete_consumer(name)
        except BusUnavailable as exc:
            return _error(503, f"Service Unavailable: {exc}", retry_after=1)
        except BusError as exc:
            return _error(502, f"Bad Gateway: {exc}")
        if not deleted:
            return _error(404, f"Not Found: no consumer {name} on {self.settings.stream_name}")
        return _answer({"ok": True, "result": {"stream": self.settings.stream_name, "name": name}})


def _body(request: Request) -> Any:
    try:
        return json.loads(request.data or b"null")
    except ValueError:
        raise BadField("body", "not valid JSON") from None


def _answer(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error(code: int, description: str, **parameters: Any) -> bytes:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return _answer(body)
