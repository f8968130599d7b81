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


def test_redacts_the_servers_folder_form_of_a_token():
    token = fake_token(4242)
    folder = token.replace(":", "~")
    cleaned = redact.redact(f"/var/lib/telegram-bot-api/{folder}/documents/file_3.pdf")
    assert token.split(":")[1] not in cleaned
    assert cleaned == f"/var/lib/telegram-bot-api/4242~{redact.REDACTED}/documents/file_3.pdf"


def test_redacts_given_secrets_in_one_call():
    secret = redact.secret_of(fake_token(77))
    assert redact.redact(f"a bare {secret} here", [secret]) == f"a bare {redact.REDACTED} here"
    assert redact.redact(f"a bare {secret} here") == f"a bare {secret} here"


def test_secret_of_and_the_folder_names_of_a_token():
    token = fake_token(31)
    secret = token.split(":")[1]
    assert redact.secret_of(token) == secret and redact.secret_of("no-colon") == ""
    assert redact.bot_folder_names(token) == (
        f"31:{secret}",
        f"31~{secret}",
        f"31:{secret}:T",
        f"31~{secret}~T",
    )
