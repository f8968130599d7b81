"""HTTP layer, routing, tokens and the four parameter encodings."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from pathlib import Path

import pytest

from harness.emulator import BotHandle, EmulatorProcess, encode_multipart, raw_request
from harness.tokens import fake_token

pytestmark = pytest.mark.integration

NOT_FOUND = {"ok": False, "error_code": 404, "description": "Not Found"}


class TestRouting:
    def test_other_paths_are_not_found(self, bot: BotHandle) -> None:
        for path in ("/", "/favicon.ico", "/bot", f"/bot{bot.token}", "/api/getMe"):
            status, headers, data = raw_request(bot.emu.port, "GET", path)
            assert status == 404, path
            assert json.loads(data) == NOT_FOUND
            assert headers["Content-Type"] == "application/json"

    def test_unknown_method_is_not_found(self, bot: BotHandle) -> None:
        status, body, _ = bot.call("noSuchMethod")
        assert (status, body) == (404, NOT_FOUND)

    def test_method_names_are_case_insensitive_and_get_works(self, bot: BotHandle) -> None:
        for name in ("getMe", "getme", "GETME"):
            status, _, data = raw_request(bot.emu.port, "GET", f"/bot{bot.token}/{name}")
            assert status == 200 and json.loads(data)["result"]["id"] == bot.id

    def test_envelope_shape(self, bot: BotHandle) -> None:
        status, headers, data = raw_request(bot.emu.port, "POST", f"/bot{bot.token}/getMe")
        body = json.loads(data)
        assert status == 200 and set(body) == {"ok", "result"}
        assert headers["Content-Type"] == "application/json"
        me = body["result"]
        assert me["is_bot"] is True and me["id"] == bot.id
        assert me["username"].endswith("_bot") and me["first_name"]
        assert "can_join_groups" in me and "supports_inline_queries" in me

    def test_get_me_reflects_registration(self, emu: EmulatorProcess) -> None:
        token = fake_token(424242)
        emu.register_bot(token, first_name="Helper", username="helper_test_bot")
        me = emu.call(token, "getMe")[1]["result"]
        assert (me["first_name"], me["username"]) == ("Helper", "helper_test_bot")


class TestTokens:
    @pytest.mark.parametrize(
        ("token", "status", "description"),
        [
            ("nocolon", 401, "Unauthorized: invalid token specified"),
            ("0123:" + "a" * 30, 401, "Unauthorized: invalid token specified"),
            (f"{1 << 54}:" + "a" * 30, 401, "Unauthorized: invalid token specified"),
            ("abc:" + "a" * 30, 421, "Misdirected Request: unallowed token specified"),
            ("123456:short", 401, "Unauthorized"),
            ("123456:" + "a" * 23, 401, "Unauthorized"),
            ("123456:" + "a" * 30 + "!", 401, "Unauthorized"),
            ("123456:" + "a" * 29, 401, "Unauthorized"),
            ("123456:" + "a" * 30, 401, "Unauthorized"),
        ],
    )
    def test_malformed_tokens(
        self, emu: EmulatorProcess, token: str, status: int, description: str
    ) -> None:
        path = "/bot" + urllib.parse.quote(token, safe=":") + "/getMe"
        got, _, data = raw_request(emu.port, "GET", path)
        assert (got, json.loads(data)) == (
            status,
            {"ok": False, "error_code": status, "description": description},
        )

    def test_well_formed_but_unknown_token(self, bot: BotHandle) -> None:
        status, body, _ = bot.emu.call(fake_token(bot.id + 1), "getMe")
        assert (status, body["description"]) == (401, "Unauthorized")
        other_secret = fake_token(bot.id)
        assert bot.emu.call(other_secret, "getMe")[0] == 401


class TestParameterEncodings:
    def test_query_string(self, bot: BotHandle) -> None:
        bot.chat(1001)
        path = f"/bot{bot.token}/sendMessage?" + urllib.parse.urlencode(
            {"chat_id": 1001, "text": "via query ✓"}
        )
        status, _, data = raw_request(bot.emu.port, "GET", path)
        assert status == 200 and json.loads(data)["result"]["text"] == "via query ✓"

    def test_urlencoded_form(self, bot: BotHandle) -> None:
        bot.chat(1002)
        body = urllib.parse.urlencode({"chat_id": "1002", "text": "via form & more"}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, data = raw_request(
            bot.emu.port, "POST", f"/bot{bot.token}/sendMessage", body, headers
        )
        assert status == 200 and json.loads(data)["result"]["text"] == "via form & more"

    def test_json(self, bot: BotHandle) -> None:
        bot.chat(1003)
        markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
        result = bot.ok("sendMessage", chat_id=1003, text="via json", reply_markup=markup)
        assert result["reply_markup"] == markup
        assert bot.sent()[-1]["params"]["reply_markup"] == markup

    def test_multipart_with_query_parameters(self, bot: BotHandle) -> None:
        bot.chat(1004)
        body, content_type = encode_multipart(
            {"caption": "a <b>doc</b>", "parse_mode": "HTML"},
            {"document": ("report.txt", b"hello multipart\r\n--not-a-boundary", "text/plain")},
        )
        status, _, data = raw_request(
            bot.emu.port,
            "POST",
            f"/bot{bot.token}/sendDocument?chat_id=1004",
            body,
            {"Content-Type": content_type},
        )
        result = json.loads(data)["result"]
        assert status == 200
        assert result["document"]["file_name"] == "report.txt"
        assert result["document"]["file_size"] == len(b"hello multipart\r\n--not-a-boundary")
        assert result["caption"] == "a doc"
        assert result["caption_entities"] == [{"offset": 2, "length": 3, "type": "bold"}]
        upload = bot.sent()[-1]["params"]["document"]
        assert (
            upload["upload"] == "report.txt" and upload["size"] == result["document"]["file_size"]
        )

    def test_chunked_body(self, bot: BotHandle) -> None:
        bot.chat(1005)
        payload = json.dumps({"chat_id": 1005, "text": "chunked body"}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", bot.emu.port, timeout=10)
        chunks = iter([payload[:7], payload[7:20], payload[20:]])
        conn.request(
            "POST",
            f"/bot{bot.token}/sendMessage",
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["result"]["text"] == "chunked body"
        conn.close()

    def test_bad_json_body(self, bot: BotHandle) -> None:
        status, _, data = raw_request(
            bot.emu.port,
            "POST",
            f"/bot{bot.token}/getMe",
            b"{not json",
            {"Content-Type": "application/json"},
        )
        assert status == 400 and json.loads(data)["description"].startswith("Bad Request")


class TestConnections:
    def test_keep_alive(self, bot: BotHandle) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", bot.emu.port, timeout=10)
        for _ in range(5):
            conn.request("GET", f"/bot{bot.token}/getMe")
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Connection") == "keep-alive"
            response.read()
        sock = conn.sock
        conn.request("GET", f"/bot{bot.token}/getMe")
        conn.getresponse().read()
        assert conn.sock is sock
        conn.close()

    def test_pipelined_requests_and_connection_close(self, bot: BotHandle) -> None:
        request = f"GET /bot{bot.token}/getMe HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        last = f"GET /bot{bot.token}/getMe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", bot.emu.port), timeout=10) as sock:
            sock.sendall(request * 3 + last.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 4
        assert data.rstrip().endswith(b"}")

    def test_expect_100_continue(self, bot: BotHandle) -> None:
        bot.chat(1006)
        body = json.dumps({"chat_id": 1006, "text": "after continue"}).encode()
        head = (
            f"POST /bot{bot.token}/sendMessage HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", bot.emu.port), timeout=10) as sock:
            sock.sendall(head)
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert b"after continue" in data and data.startswith(b"HTTP/1.1 200 OK")

    def test_too_large_body_is_refused(self, bot: BotHandle) -> None:
        head = (
            f"POST /bot{bot.token}/sendDocument HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {3000 * 1024 * 1024}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", bot.emu.port), timeout=10) as sock:
            sock.sendall(head)
            data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 413")

    def test_absolute_uri(self, bot: BotHandle) -> None:
        request = f"GET http://x/bot{bot.token}/getMe HTTP/1.1\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", bot.emu.port), timeout=10) as sock:
            sock.sendall(request.encode())
            data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 404")
        assert b"absolute URI" in data


class TestControlApi:
    def test_under_the_prefix_on_the_api_port(self, bot: BotHandle) -> None:
        status, _, data = raw_request(bot.emu.port, "GET", "/_emulator/bots")
        bots = json.loads(data)
        assert status == 200 and bots["ok"] is True
        assert bots["result"] == [
            {
                "id": bot.id,
                "first_name": f"Emulated Bot {bot.id}",
                "username": f"emulated_{bot.id}_bot",
                "logged_out": False,
                "launched": False,  # no Bot API request for it yet
            }
        ]
        assert bot.token.split(":")[1] not in data.decode()

    def test_on_the_separate_port(self, bot: BotHandle) -> None:
        status, _, data = raw_request(bot.emu.control_port, "GET", "/_emulator/stats")
        assert status == 200 and "calls" in json.loads(data)["result"]
        status, _, data = raw_request(bot.emu.control_port, "GET", "/ping")
        assert status == 200 and json.loads(data)["result"]["api_version"] == "10.0"

    def test_errors(self, emu: EmulatorProcess) -> None:
        status, _, data = raw_request(emu.port, "GET", "/_emulator/nothing")
        assert status == 404 and json.loads(data)["ok"] is False
        status, _, data = raw_request(emu.port, "DELETE", "/_emulator/bots")
        assert status == 405
        status, _, data = raw_request(emu.port, "POST", "/_emulator/bots", b"[1]")
        assert status == 400 and "error" in json.loads(data)
        envelope = emu.control("POST", "/bots", {"token": "12:short"})
        assert envelope["ok"] is False and "invalid token" in envelope["error"]
        assert emu.control("POST", "/chats", {"bot_id": 1, "chats": []})["ok"] is False

    def test_index_lists_the_endpoints(self, emu: EmulatorProcess) -> None:
        endpoints = emu.control("GET", "/")["result"]
        assert "POST /_emulator/faults" in endpoints and "GET /_emulator/sent" in endpoints


def test_logs_never_contain_secrets(tmp_path: Path) -> None:
    with EmulatorProcess(tmp_path, verbosity=5) as emu:
        handle = BotHandle.register(emu, 31337)
        handle.chat(5)
        handle.ok("sendMessage", chat_id=5, text="hello")
        handle.call("getUpdates")
        emu.call(fake_token(31338), "getMe")
        raw_request(emu.port, "GET", f"/bot{handle.token}/nope/../x")
        emu.fault("error", methods=["getMe"], count=1)
        handle.call("getMe")
    log = emu.log_text()
    assert "bot31337:<redacted>" in log
    assert handle.token.split(":")[1] not in log
