"""getUpdates through the Bot API client: raw update bytes, errors, keep-alive."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import pytest

from harness.tokens import fake_token
from telegram_gateway.botapi import BotApi, BotApiClient, split_result_array
from telegram_gateway.config import BotConfig
from telegram_gateway.errors import BotApiTimeout, BotApiUnavailable, TelegramError

pytestmark = pytest.mark.unit


def test_split_keeps_each_update_as_served():
    text = (
        '{"ok":true,"result":[{"update_id":1,"message":{"text":"h\\u00e9 \\"x\\"","b":1.50}},'
        ' \n{"update_id":2,"poll":{"z":[1,{"y":null}]}}]}'
    )
    items = split_result_array(text)
    assert items is not None
    assert [raw for _, raw in items] == [
        b'{"update_id":1,"message":{"text":"h\\u00e9 \\"x\\"","b":1.50}}',
        b'{"update_id":2,"poll":{"z":[1,{"y":null}]}}',
    ]
    assert items[0][0]["message"]["text"] == 'hé "x"'
    assert split_result_array('{"ok":true,"result":[]}') == []
    assert split_result_array(' { "ok" : true , "result" : [ ] } ') == []
    # other shapes: the caller parses the whole answer instead
    assert split_result_array('{"result":[],"ok":true}') is None
    assert split_result_array('{"ok":false,"error_code":409}') is None
    assert split_result_array('{"ok":true,"result":[{"update_id":1}') is None
    assert split_result_array('{"ok":true,"result":[1]} trailing') is None


class Script:
    """What the fake server answers next: (status, body bytes) or "close"."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.requests: list[tuple[str, str]] = []
        self.connections = 0


def make_handler(script: Script) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            script.connections += 1
            super().setup()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            self.requests_body = self.rfile.read(length).decode()
            script.requests.append((self.path, self.requests_body))
            answer = script.answers.pop(0) if script.answers else (200, b'{"ok":true,"result":[]}')
            if answer == "close":
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            status, body = answer
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the client gave up (timeout test): expected


@pytest.fixture
def served():
    script = Script()
    httpd = QuietServer(("127.0.0.1", 0), make_handler(script))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    token = fake_token(555)
    api = BotApi(f"http://127.0.0.1:{httpd.server_address[1]}")
    client = BotApiClient(api, BotConfig(555, token), timeout=2)
    yield script, client, token
    api.close()
    httpd.shutdown()
    httpd.server_close()


def test_raw_updates_params_and_keep_alive(served):
    script, client, token = served
    body = b'{"ok":true,"result":[{"update_id":7,"message":{"x_new":{"a":[1,2]}}}]}'
    script.answers = [(200, body), (200, b'{"ok":true,"result":[]}')]
    items = client.get_updates_raw(None, 100, 0, ["message", "chat_member"])
    assert items == [({"update_id": 7, "message": {"x_new": {"a": [1, 2]}}}, body[21:-2])]
    assert client.get_updates_raw(8, 50, 0) == []
    (path, first), (_, second) = script.requests
    assert path == f"/bot{token}/getUpdates"
    assert json.loads(first) == {
        "limit": 100,
        "timeout": 0,
        "allowed_updates": ["message", "chat_member"],
    }
    assert json.loads(second) == {"limit": 50, "timeout": 0, "offset": 8}
    assert script.connections == 1  # kept alive


def test_errors_are_typed_and_a_stale_connection_is_replaced(served):
    script, client, token = served
    conflict = {"ok": False, "error_code": 409, "description": "Conflict: terminated by other"}
    script.answers = [(409, json.dumps(conflict).encode())]
    with pytest.raises(TelegramError) as info:
        client.get_updates_raw(None, 100, 0)
    assert info.value.error_code == 409
    script.answers = [(502, b"<html>bad gateway</html>")]
    with pytest.raises(BotApiUnavailable, match="HTTP 502 without a Bot API envelope"):
        client.get_updates_raw(None, 100, 0)
    # the server drops a kept-alive connection: one retry on a fresh one
    client.get_updates_raw(None, 100, 0)
    script.answers = ["close", (200, b'{"ok":true,"result":[]}')]
    assert client.get_updates_raw(None, 100, 0) == []
    script.answers = ["close", "close"]
    with pytest.raises(BotApiUnavailable) as down:
        client.get_updates_raw(None, 100, 0)
    assert token.split(":")[1] not in str(down.value)


def test_timeout_is_bounded(served):
    script, client, _ = served
    client.timeout = 0.3
    release = threading.Event()
    original = script.answers

    class Slow(list):
        def pop(self, index=-1):
            release.wait(3)
            return (200, b'{"ok":true,"result":[]}')

    script.answers = Slow([None])
    with pytest.raises(BotApiTimeout, match=r"within 0\.3 s"):
        client.get_updates_raw(None, 100, 0)
    release.set()
    script.answers = original
