"""The outbound HTTP client against tiny local servers: framing, keep-alive, failure kinds."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable

import pytest

from telegram_gateway.errors import BotApiTimeout, BotApiUnavailable, BotApiUnreachable
from telegram_gateway.outbound import Upload
from telegram_gateway.outbound_http import BotApiTransport

pytestmark = pytest.mark.unit

TOKEN = "123:" + "A" * 30
OK = b'{"ok":true,"result":{"message_id":1}}'


class Server:
    """Accepts connections; ``handle(conn, request_bytes)`` answers each request."""

    def __init__(self, handle: Callable[[socket.socket, bytes], bool]) -> None:
        self.handle = handle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                if not self.handle(conn, rest[:length]):
                    return

    def close(self) -> None:
        self.sock.close()


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> Callable:
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )
        return True

    return handle


def test_a_json_call_in_one_write_and_keep_alive():
    server = Server(answer(OK))
    transport = BotApiTransport(server.url)
    for _ in range(3):
        reply = transport.call(TOKEN, "sendMessage", {"chat_id": 1, "text": "é"}, None, 5)
        assert reply.envelope == {"ok": True, "result": {"message_id": 1}}
        assert reply.raw == OK
    assert server.connections == 1  # one kept-alive connection for all three
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(f"POST /bot{TOKEN}/sendMessage HTTP/1.1".encode())
    assert json.loads(body) == {"chat_id": 1, "text": "é"}


def test_telegram_errors_are_answers():
    server = Server(answer(b'{"ok":false,"error_code":403,"description":"Forbidden"}', "403 X"))
    reply = BotApiTransport(server.url).call(TOKEN, "sendMessage", {}, None, 5)
    assert reply.envelope["error_code"] == 403 and reply.status == 403


def test_chunked_answers():
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, OK[:10])
            + b"%x\r\n%s\r\n" % (len(OK) - 10, OK[10:])
            + b"0\r\n\r\n"
        )
        return True

    transport = BotApiTransport(Server(handle).url)
    assert transport.call(TOKEN, "getMe", {}, None, 5).raw == OK
    assert transport.call(TOKEN, "getMe", {}, None, 5).raw == OK


def test_a_connection_the_server_closed_is_not_reused():
    def handle(conn: socket.socket, request: bytes) -> bool:
        answer(OK)(conn, request)
        return False  # close after every answer, without saying so

    server = Server(handle)
    transport = BotApiTransport(server.url)
    for _ in range(3):
        transport.call(TOKEN, "getMe", {}, None, 5)
        time.sleep(0.05)  # let the close arrive
    assert server.connections == 3


def test_connection_close_answers_are_read_to_the_end():
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + OK)
        return False

    assert BotApiTransport(Server(handle).url).call(TOKEN, "getMe", {}, None, 5).raw == OK


def test_refused_is_unreachable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(BotApiUnreachable, match="cannot connect"):
        BotApiTransport(f"http://127.0.0.1:{port}").call(TOKEN, "getMe", {}, None, 2)


def test_dropped_after_the_request_is_unavailable_and_hides_the_token():
    with pytest.raises(BotApiUnavailable) as info:
        BotApiTransport(Server(lambda conn, request: False).url).call(TOKEN, "getMe", {}, None, 2)
    assert not isinstance(info.value, BotApiUnreachable)
    assert TOKEN.split(":")[1] not in str(info.value)


def test_not_the_bot_api_is_unavailable():
    server = Server(answer(b"<html>proxy error</html>", "502 Bad Gateway"))
    with pytest.raises(BotApiUnavailable, match="without a Bot API envelope"):
        BotApiTransport(server.url).call(TOKEN, "getMe", {}, None, 2)


def test_a_silent_server_is_a_timeout_within_the_bound():
    server = Server(lambda conn, request: time.sleep(5) or False)
    started = time.monotonic()
    with pytest.raises(BotApiTimeout):
        BotApiTransport(server.url).call(TOKEN, "getMe", {}, None, 0.5)
    assert time.monotonic() - started < 1.5


def test_uploads_are_streamed_as_multipart():
    server = Server(answer(OK))
    content = bytes(range(256)) * 4096  # 1 MiB
    upload = Upload("document", 'we"ird.bin', io.BytesIO(content), size=len(content))
    BotApiTransport(server.url).call(
        TOKEN, "sendDocument", {"chat_id": 7, "caption": "c", "protect_content": True}, upload, 5
    )
    request = server.requests[0]
    head, _, body = request.partition(b"\r\n\r\n")
    assert b"multipart/form-data; boundary=" in head
    assert b'name="chat_id"\r\n\r\n7\r\n' in body
    assert b'name="protect_content"\r\n\r\ntrue\r\n' in body
    assert b'filename="we_ird.bin"' in body
    assert content in body
