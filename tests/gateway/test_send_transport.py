"""The Bot API client's HTTP (``botapi.BotApi``) against tiny local servers: framing,
keep-alive, streamed uploads, and the three kinds of failure the sender's promises rest on."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.procs import wait_until
from telegram_gateway.botapi import BotApi
from telegram_gateway.errors import BotApiTimeout, BotApiUnavailable, BotApiUnreachable
from telegram_gateway.outbound import Upload

pytestmark = pytest.mark.unit

TOKEN = "123:" + "A" * 30
OK = b'{"ok":true,"result":{"message_id":1}}'


class Server:
    """Accepts connections; ``handle(conn, request_bytes)`` answers each request and says
    whether the connection stays open."""

    def __init__(self, handle: Callable[[socket.socket, bytes], bool]) -> None:
        self.handle = handle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closed = 0
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
        try:
            self._requests(conn)
        except OSError:
            pass  # the client gave up
        finally:
            conn.close()
            self.closed += 1

    def _requests(self, conn: socket.socket) -> None:
        buffer = b""
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


def answer(body: bytes, status: str = "200 OK") -> Callable[[socket.socket, bytes], bool]:
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return True

    return handle


def test_a_json_call_keeps_its_connection_alive():
    server = Server(answer(OK))
    api = BotApi(server.url)
    for _ in range(3):
        reply = api.post(TOKEN, "sendMessage", {"chat_id": 1, "text": "é"}, None, 5)
        assert reply.envelope == {"ok": True, "result": {"message_id": 1}}
        assert reply.raw == OK and reply.status == 200
    assert server.connections == 1  # one kept-alive connection for all three
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(f"POST /bot{TOKEN}/sendMessage HTTP/1.1".encode())
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"chat_id": 1, "text": "é"}


def test_telegram_errors_are_answers():
    server = Server(answer(b'{"ok":false,"error_code":403,"description":"Forbidden"}', "403 X"))
    reply = BotApi(server.url).post(TOKEN, "sendMessage", {}, None, 5)
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

    api = BotApi(Server(handle).url)
    assert api.post(TOKEN, "getMe", {}, None, 5).raw == OK
    assert api.post(TOKEN, "getMe", {}, None, 5).raw == OK


def test_a_connection_the_server_closed_is_not_reused():
    def handle(conn: socket.socket, request: bytes) -> bool:
        answer(OK)(conn, request)
        return False  # close after every answer, without saying so

    server = Server(handle)
    api = BotApi(server.url)
    for attempt in range(1, 4):
        assert api.post(TOKEN, "getMe", {}, None, 5).raw == OK
        wait_until(lambda n=attempt: server.closed == n, 5, "the server to close")
    assert server.connections == 3


def test_connection_close_answers_are_read_to_the_end():
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + OK)
        return False

    assert BotApi(Server(handle).url).post(TOKEN, "getMe", {}, None, 5).raw == OK


def test_refused_is_unreachable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(BotApiUnreachable, match="cannot connect") as info:
        BotApi(f"http://127.0.0.1:{port}").post(TOKEN, "getMe", {}, None, 2)
    assert TOKEN.split(":")[1] not in str(info.value)


def test_a_connect_timeout_is_unreachable():
    listener = socket.socket()  # a server that never accepts: its queue of one is full
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    queued = socket.create_connection(listener.getsockname(), timeout=5)
    started = time.monotonic()
    try:
        with pytest.raises(BotApiUnreachable, match=r"connecting to the Bot API at .* timed out"):
            BotApi(f"http://127.0.0.1:{listener.getsockname()[1]}").post(
                TOKEN, "getMe", {}, None, 0.5
            )
        assert time.monotonic() - started < 1.5
    finally:
        queued.close()
        listener.close()


def test_dropped_after_the_request_is_unavailable_and_hides_the_token():
    with pytest.raises(BotApiUnavailable, match="broke") as info:
        BotApi(Server(lambda conn, request: False).url).post(TOKEN, "getMe", {}, None, 2)
    assert not isinstance(info.value, BotApiUnreachable)
    assert TOKEN.split(":")[1] not in str(info.value)


def test_a_garbled_answer_is_unavailable():
    def handle(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK)
        return False  # the body ends before its length

    with pytest.raises(BotApiUnavailable, match="broke") as info:
        BotApi(Server(handle).url).post(TOKEN, "getMe", {}, None, 2)
    assert not isinstance(info.value, BotApiUnreachable)


def test_not_the_bot_api_is_unavailable():
    server = Server(answer(b"<html>proxy error</html>", "502 Bad Gateway"))
    with pytest.raises(BotApiUnavailable, match="HTTP 502 without a Bot API envelope"):
        BotApi(server.url).post(TOKEN, "getMe", {}, None, 2)


def test_a_silent_server_is_a_timeout_within_the_bound():
    release = threading.Event()
    server = Server(lambda conn, request: release.wait(5) and False)
    started = time.monotonic()
    try:
        with pytest.raises(BotApiTimeout, match=r"no answer from the Bot API within 0\.5 s"):
            BotApi(server.url).post(TOKEN, "getMe", {}, None, 0.5)
        assert time.monotonic() - started < 1.5
    finally:
        release.set()


class ReadLog(io.FileIO):
    """A file on disk (as /send spools uploads) that remembers the size of every read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.reads: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.reads.append(len(data))
        return data


def test_uploads_are_streamed_as_multipart(tmp_path):
    server = Server(answer(OK))
    content = bytes(range(256)) * 4096 * 8  # 8 MiB
    (tmp_path / "upload").write_bytes(content)
    stream = ReadLog(tmp_path / "upload")
    upload = Upload("document", 'we"ird.bin', stream, size=len(content))
    params = {"chat_id": 7, "caption": "c", "protect_content": True, "reply_markup": {"a": 1}}
    BotApi(server.url).post(TOKEN, "sendDocument", params, upload, 10)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert b"multipart/form-data; boundary=" in head
    assert f"Content-Length: {len(body)}".encode() in head  # not chunked: the length is known
    assert b'name="chat_id"\r\n\r\n7\r\n' in body
    assert b'name="protect_content"\r\n\r\ntrue\r\n' in body
    assert b'name="reply_markup"\r\n\r\n{"a":1}\r\n' in body
    assert b'filename="we%22ird.bin"' in body  # quotes escaped as browsers do (WHATWG)
    assert content in body
    # read piece by piece as it is sent, never the whole file at once
    assert sum(stream.reads) == len(content)
    assert max(stream.reads) <= 1024 * 1024
