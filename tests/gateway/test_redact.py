from __future__ import annotations

import io
import logging

import pytest

from harness.tokens import fake_token
from telegram_gateway import redact

pytestmark = pytest.mark.unit


def test_redacts_token_in_urls_and_text():
    token = fake_token(123456)
    secret = token.split(":")[1]
    text = f"GET http://127.0.0.1:8081/bot{token}/getUpdates and {token}"
    cleaned = redact.redact(text)
    assert secret not in cleaned
    assert "bot123456:<redacted>/getUpdates" in cleaned


def test_ports_and_times_are_left_alone():
    assert redact.redact("127.0.0.1:8081 at 12:30:45") == "127.0.0.1:8081 at 12:30:45"


def test_every_logger_and_traceback_is_redacted():
    redact.install()
    token = fake_token(987)
    secret = token.split(":")[1]
    redact.add_secrets(["nats-password-xyz"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("urllib3.connectionpool").debug('"POST /bot%s/getMe HTTP/1.1" 200', token)
        # error: pyTelegramBotAPI sets its logger to ERROR once it is imported
        logging.getLogger("TeleBot").error("password nats-password-xyz")
        try:
            raise RuntimeError(f"failed url /bot{token}/sendMessage")
        except RuntimeError:
            logging.getLogger("x").exception("boom")
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    output = stream.getvalue()
    assert secret not in output
    assert "nats-password-xyz" not in output
    assert output.count("<redacted>") >= 3
