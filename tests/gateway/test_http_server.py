"""The gateway's HTTP server (telegram_gateway.http_worker): keep-alive, the idle bound,
malformed requests -- on the wire, against gunicorn with the gateway's worker class."""

from __future__ import annotations

import io
import json
import socket
import time

import pytest
from outbound_fixtures import BOT, PRIVATE, OutboundStack

from harness.procs import wait_until
from telegram_gateway.http_worker import MAX_HEADER_LINE, RequestHeaders

pytestmark = pytest.mark.integration

KEEPALIVE = 1  # seconds, through gunicorn's own GUNICORN_CMD_ARGS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with OutboundStack(
        tmp_path_factory.mktemp("http"), workers=1, GUNICORN_CMD_ARGS=f"--keep-alive {KEEPALIVE}"
    ) as running:
        yield running


def connect(stack: OutboundStack) -> socket.socket:
    assert stack.gateway is not None
    sock = socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a complete answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def send_request(stack: OutboundStack, index: int) -> bytes:
    body = json.dumps({"bot": BOT, "chat_id": PRIVATE[60 + index], "text": f"keep-alive {index}"})
    return (
        "POST /send HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {stack.api_token}\r\nContent-Length: {len(body.encode())}\r\n\r\n"
        f"{body}"
    ).encode()


def is_closed(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection (EOF) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_several_requests_on_one_keep_alive_connection(stack):
    with connect(stack) as sock:
        for index in range(3):
            sock.sendall(send_request(stack, index))
            status, headers, body = read_response(sock)
            assert status == 200, body
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["result"][0]["text"] == f"keep-alive {index}"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        status, _, body = read_response(sock)
        assert status in (200, 503) and json.loads(body)["service"] == "telegram-gateway"


def test_a_chunked_request_body_is_read_whole(stack):
    body = json.dumps({"bot": BOT, "chat_id": PRIVATE[65], "text": "sent in chunks"}).encode()
    chunks = b"".join(
        f"{len(body[i : i + 7]):x}\r\n".encode() + body[i : i + 7] + b"\r\n"
        for i in range(0, len(body), 7)
    )
    with connect(stack) as sock:
        sock.sendall(
            b"POST /send HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {stack.api_token}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
        status, _, answer = read_response(sock)
    assert status == 200, answer
    assert json.loads(answer)["result"][0]["text"] == "sent in chunks"


def test_an_idle_connection_is_closed_after_the_keepalive_bound(stack):
    with connect(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        read_response(sock)
        began = time.monotonic()
        assert is_closed(sock, KEEPALIVE + 5), "the idle connection stayed open"
        assert KEEPALIVE - 0.2 <= time.monotonic() - began <= KEEPALIVE + 2


def test_a_connection_that_never_sends_a_request_is_closed_too(stack):
    with connect(stack) as sock:
        assert is_closed(sock, KEEPALIVE + 5)


def test_a_connection_in_use_is_not_cut_by_the_bound(stack):
    """Requests spaced just under the bound keep the connection; a slow request body is not
    subject to it."""
    with connect(stack) as sock:
        for _ in range(3):
            time.sleep(KEEPALIVE * 0.6)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            status, _, _ = read_response(sock)
            assert status in (200, 503)
        request = send_request(stack, 5)
        head, _, body = request.partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n" + body[:10])
        time.sleep(KEEPALIVE * 1.5)
        sock.sendall(body[10:])
        status, _, answer = read_response(sock)
        assert status == 200, answer


@pytest.mark.parametrize(
    "raw",
    [
        b"NONSENSE\r\n\r\n",
        b"POST /send HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
    ],
    ids=[
        "no-request-line",
        "negative-length",
        "bad-length",
        "too-long-line",
        "folded-header",
        "no-colon",
        "conflicting-lengths",
        "too-many-headers",
    ],
)
def test_malformed_http_gets_a_4xx_and_the_worker_keeps_serving(stack, raw):
    with connect(stack) as sock:
        sock.sendall(raw)
        status, _, _ = read_response(sock)
        assert 400 <= status < 500
    assert stack.gateway is not None
    status, _ = stack.gateway.get("/healthz")
    assert status in (200, 503)


def test_gunicorns_access_log_works_when_an_operator_turns_it_on(tmp_path):
    """Off by default (nothing computed for it); ``--access-logfile`` still writes lines."""
    with OutboundStack(
        tmp_path, workers=1, GUNICORN_CMD_ARGS="--access-logfile - --keep-alive 1"
    ) as logged:
        assert logged.gateway is not None
        status, _ = logged.gateway.get("/healthz?probe=access")
        assert status in (200, 503)
        status, _, _ = logged.send({"bot": BOT, "chat_id": PRIVATE[70], "text": "logged"})
        assert status == 200
        # the line is written after the answer went out: wait for it, not for a fixed time
        gateway = logged.gateway
        wait_until(lambda: '"POST /send HTTP/1.1"' in gateway.log(), 10, "the access log line")
        log = gateway.log()
    assert '"GET /healthz?probe=access HTTP/1.1" ' in log
    assert '"POST /send HTTP/1.1" 200' in log
    assert logged.api_token not in log


# ---- the header reader on its own ------------------------------------------------------------
def headers_of(raw: bytes) -> tuple[RequestHeaders, bytes]:
    stream = io.BytesIO(raw)
    return RequestHeaders(stream, 0), stream.read()


@pytest.mark.unit
def test_headers_are_read_up_to_the_blank_line_and_looked_up_without_case():
    headers, rest = headers_of(
        b"Host: gw\r\nContent-Type: application/json\r\nX-Twice: 1\r\n"
        b"x-twice: 2\r\nAuthorization:  Bearer  abc \r\n\r\n{body}"
    )
    assert headers.status == ""
    assert rest == b"{body}"
    assert headers.get("HOST") == "gw" and headers.getheader("host") == "gw"
    assert headers.typeheader == "application/json"
    assert headers.get("x-twice") == "1" and headers.get_all("X-Twice") == ["1", "2"]
    assert headers.get("Authorization") == "Bearer  abc"
    assert headers.get("missing", "default") == "default"
    assert "content-type" in headers and "nope" not in headers
    del headers["X-TWICE"]
    assert "x-twice" not in headers
    assert list(headers.headers) == [
        "Host: gw\r\n",
        "Content-Type: application/json\r\n",
        "Authorization: Bearer  abc\r\n",
    ]


@pytest.mark.unit
def test_the_same_content_length_twice_is_accepted():
    headers, _ = headers_of(b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n")
    assert headers.status == "" and headers.get("content-length") == "2"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"Host: x\r\n continued\r\n\r\n", "Malformed header line"),
        (b"\tX: y\r\n\r\n", "Malformed header line"),
        (b"Host x\r\n\r\n", "Malformed header line"),
        (b"Host : x\r\n\r\n", "Malformed header line"),
        (b": x\r\n\r\n", "Malformed header line"),
        (b"Bad Name: x\r\n\r\n", "Malformed header line"),
        (b"X-\xe9: x\r\n\r\n", "Malformed header line"),
        (b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", "Conflicting Content-Length"),
        (b"X: " + b"a" * MAX_HEADER_LINE + b"\r\n\r\n", "Line too long"),
        (b"X: a\r\n" * 101 + b"\r\n", "Too many headers"),
    ],
)
def test_unacceptable_headers_are_named(raw, status):
    headers, _ = headers_of(raw)
    assert headers.status == status


@pytest.mark.unit
def test_headers_end_at_the_end_of_the_stream():
    headers, _ = headers_of(b"Host: x\r\n")
    assert headers.status == "" and headers.get("host") == "x"
