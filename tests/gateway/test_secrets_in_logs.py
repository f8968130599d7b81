"""pyTelegramBotAPI and urllib3 at DEBUG, through the real HTTP stack: no token secret in
any log line (the integration tests check the gateway's whole log as well)."""

from __future__ import annotations

import http.server
import io
import json
import logging
import threading

import pytest

from harness.tokens import fake_token
from telegram_gateway import botapi, redact
from telegram_gateway.config import BotConfig
from telegram_gateway.errors import BotApiUnavailable, TelegramError

pytestmark = pytest.mark.unit


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path.endswith("/getMe"):
            body = {"ok": True, "result": {"id": 1, "is_bot": True, "username": "b"}}
            status = 200
        else:
            body = {"ok": False, "error_code": 400, "description": f"Bad Request: {self.path}"}
            status = 400
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_library_and_urllib3_debug_logs_are_redacted(server, monkeypatch):
    redact.install()
    token = fake_token(31337)
    secret = token.split(":", 1)[1]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("TeleBot", "urllib3", "telegram_gateway")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    try:
        client = botapi.BotApiClient(botapi.BotApi(server), BotConfig(31337, token), timeout=5)
        assert client.get_me()["username"] == "b"
        with pytest.raises(TelegramError) as info:
            client.call("sendMessage", {"chat_id": 1, "text": "x"})
        logging.getLogger("telegram_gateway.test").warning("failed: %s", info.value)
        closed = botapi.BotApiClient(
            botapi.BotApi("http://127.0.0.1:9"), BotConfig(31337, token), timeout=2
        )
        with pytest.raises(BotApiUnavailable) as down:
            closed.get_me()
        logging.getLogger("telegram_gateway.test").warning("failed: %s", down.value)
        try:
            raise RuntimeError(f"GET {server}/bot{token}/getMe")
        except RuntimeError:
            logging.getLogger("telegram_gateway.test").exception("traceback")
    finally:
        for lg, level in saved:
            lg.setLevel(level)
            lg.removeHandler(handler)
    output = stream.getvalue()
    assert "urllib3.connectionpool" in output and "/bot31337:" in output  # DEBUG lines seen
    assert secret not in output
    assert secret not in str(down.value)
