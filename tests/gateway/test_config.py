from __future__ import annotations

import pytest

from harness.tokens import fake_token
from telegram_gateway.config import load_settings
from telegram_gateway.errors import ConfigError

pytestmark = pytest.mark.unit


def env(**extra: str) -> dict[str, str]:
    base = {"TELEGRAM_BOT_TOKENS": fake_token(111), "GATEWAY_API_TOKEN": "x" * 32}
    base.update(extra)
    return base


def test_defaults_match_the_design_contract():
    settings = load_settings(env())
    assert settings.telegram_api_url == "http://127.0.0.1:8081"
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.stream_name == "TELEGRAM"
    assert settings.stream_duplicate_window >= 120
    assert [b.bot_id for b in settings.bots] == [111]


def test_named_bots_and_lookup():
    settings = load_settings(env(TELEGRAM_BOT_TOKENS=f"support={fake_token(5)}, {fake_token(6)}"))
    assert settings.bot("support").bot_id == 5
    assert settings.bot("6").bot_id == 6
    assert settings.bot(6).bot_id == 6
    assert settings.bot(None) is None  # two bots: the caller must say which
    assert settings.bot("nope") is None


def test_one_error_names_every_problem_and_hides_secrets():
    bad_token = "123:short"
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "TELEGRAM_BOT_TOKENS": bad_token,
                "NATS_URL": "http://x",
                "GATEWAY_POLL_TIMEOUT": "99",
                "GATEWAY_POLL_LIMIT": "many",
            }
        )
    text = str(info.value)
    assert "TELEGRAM_BOT_TOKENS" in text
    assert "GATEWAY_API_TOKEN is required" in text
    assert "NATS_URL" in text and "nats://" in text
    assert "GATEWAY_POLL_TIMEOUT must be between 0 and 50" in text
    assert "GATEWAY_POLL_LIMIT must be a number" in text
    assert bad_token not in text


def test_the_stall_limit_must_leave_room_for_an_idle_long_poll():
    """An idle getUpdates returns after GATEWAY_POLL_TIMEOUT: a stall limit below that plus
    the slack would make /healthz call every idle poller stalled."""
    assert load_settings(env()).poll_timeout == 50
    assert load_settings(env()).poller_stall_after == 90
    with pytest.raises(ConfigError, match="GATEWAY_POLLER_STALL_AFTER must be at least"):
        load_settings(env(GATEWAY_POLLER_STALL_AFTER="55"))
    settings = load_settings(env(GATEWAY_POLLER_STALL_AFTER="35", GATEWAY_POLL_TIMEOUT="25"))
    assert settings.poller_stall_after == 35


def test_duplicate_window_must_cover_retries():
    with pytest.raises(ConfigError, match="GATEWAY_STREAM_DUPLICATE_WINDOW"):
        load_settings(env(GATEWAY_STREAM_DUPLICATE_WINDOW="60"))


def test_nats_user_and_password_together():
    with pytest.raises(ConfigError, match="NATS_USER and NATS_PASSWORD"):
        load_settings(env(NATS_USER="gw"))


def test_repr_never_shows_secrets():
    token = fake_token(42)
    settings = load_settings(
        env(TELEGRAM_BOT_TOKENS=token, NATS_USER="gw", NATS_PASSWORD="pa55word-secret")
    )
    text = repr(settings)
    assert token.split(":")[1] not in text
    assert "pa55word-secret" not in text
    assert "x" * 32 not in text
