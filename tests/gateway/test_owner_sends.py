"""A Delivery crosses NATS from the bot's owner to the worker that received the send: the same
results, Telegram error, raw bytes, migration and failure class (and so the same HTTP answer
and the same Idempotency-Key decision)."""

from __future__ import annotations

import pytest

from telegram_gateway.errors import (
    BotApiTimeout,
    BotApiUnavailable,
    BotApiUnreachable,
    PacingUnavailable,
    RateLimited,
)
from telegram_gateway.owner_sends import delivery_from, delivery_to
from telegram_gateway.sender import Delivery
from telegram_gateway.web.send import outcome_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "delivery",
    [
        Delivery(results=[{"message_id": 1}], raw=b'{"ok":true,"result":{"message_id":1}}'),
        Delivery(results=[{"message_id": 1}, {"message_id": 2}], migrated_to=-1001234),
        Delivery(telegram_error={"ok": False, "error_code": 400, "description": "Bad Request"}),
        Delivery(failure=RateLimited(7, "later")),
        Delivery(failure=PacingUnavailable("no owner", 2)),
        Delivery(failure=BotApiTimeout("sendMessage", "no answer in 30 s")),
        Delivery(failure=BotApiUnreachable("sendMessage", "connection refused")),
        Delivery(results=[{"message_id": 1}], failure=BotApiUnavailable("sendMessage", "reset")),
    ],
    ids=["ok", "migrated", "telegram-400", "rate", "no-owner", "timeout", "unreachable", "part"],
)
def test_a_delivery_survives_the_trip_from_the_owner(delivery: Delivery) -> None:
    back = delivery_from(delivery_to(delivery))
    assert back.results == delivery.results
    assert back.telegram_error == delivery.telegram_error
    assert back.migrated_to == delivery.migrated_to
    assert back.raw == delivery.raw
    assert type(back.failure) is type(delivery.failure)
    assert str(back.failure or "") == str(delivery.failure or "")
    assert getattr(back.failure, "retry_after", None) == getattr(
        delivery.failure, "retry_after", None
    )
    assert (back.ok, back.final) == (delivery.ok, delivery.final)
    assert outcome_of(back) == outcome_of(delivery)
