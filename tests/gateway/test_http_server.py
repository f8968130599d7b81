"""The gateway's HTTP server -- gunicorn's stock gevent worker configured by
gateway/gunicorn.conf.py -- on the wire: keep-alive, the idle bound, malformed and hostile
requests, the request head's size, bodies that stall or are refused, the access log."""

from __future__ import annotations

import json
import time
from contextlib import suppress

import pytest
from outbound_fixtures import BOT, PRIVATE, outbound_stack
from raw_http import connect, exchange, is_closed, read_response, seconds_until_closed

from harness.procs import wait_until
from harness.stack import Stack
from telegram_gateway.web.request_body import BODY_STALL_TIMEOUT

pytestmark = pytest.mark.integration

KEEPALIVE = 1  # seconds, through gunicorn's own GUNICORN_CMD_ARGS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with outbound_stack(
        tmp_path_factory.mktemp("http"), workers=1, GUNICORN_CMD_ARGS=f"--keep-alive {KEEPALIVE}"
    ) as running:
        yield running


def port(stack: Stack) -> int:
    return stack.gateway.port


def send_request(stack: Stack, index: int) -> bytes:
    body = json.dumps({"bot": BOT, "chat_id": PRIVATE[60 + index], "text": f"keep-alive {index}"})
    return (
        "POST /send HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {stack.api_token}\r\nContent-Length: {len(body.encode())}\r\n\r\n"
        f"{body}"
    ).encode()


def post_head(stack: Stack | None, framing: str) -> bytes:
    """The head of a ``POST /send`` (with the API token unless ``stack`` is None)."""
    auth = f"Authorization: Bearer {stack.api_token}\r\n" if stack is not None else ""
    return (
        f"POST /send HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n{auth}"
        f"{framing}\r\n\r\n"
    ).encode()


def assert_still_serving(stack: Stack) -> None:
    status, _, body = exchange(port(stack), b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert status in (200, 503) and json.loads(body)["service"] == "telegram-gateway"


# ---- keep-alive and the idle bound -----------------------------------------------------------
def test_several_requests_on_one_keep_alive_connection(stack):
    with connect(port(stack)) as sock:
        for index in range(3):
            sock.sendall(send_request(stack, index))
            status, headers, body = read_response(sock)
            assert status == 200, body
            assert headers["content-type"] == "application/json"
            assert headers["connection"] == "keep-alive"
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
    with connect(port(stack)) as sock:
        sock.sendall(post_head(stack, "Transfer-Encoding: chunked") + chunks + b"0\r\n\r\n")
        status, _, answer = read_response(sock)
    assert status == 200, answer
    assert json.loads(answer)["result"][0]["text"] == "sent in chunks"


def test_an_idle_connection_is_closed_after_the_keepalive_bound(stack):
    with connect(port(stack)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        read_response(sock)
        took = seconds_until_closed(sock, KEEPALIVE + 5)
        assert took is not None, "the idle connection stayed open"
        assert KEEPALIVE - 0.2 <= took <= KEEPALIVE + 2


def test_a_connection_that_never_sends_a_request_is_closed_too(stack):
    with connect(port(stack)) as sock:
        assert is_closed(sock, KEEPALIVE + 5)


def test_a_connection_that_stops_in_the_middle_of_a_request_head_is_closed(stack):
    with connect(port(stack)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Half: ")
        took = seconds_until_closed(sock, KEEPALIVE + 5)
        assert took is not None and took <= KEEPALIVE + 2


def test_a_connection_in_use_is_not_cut_by_the_bound(stack):
    """Requests spaced just under the bound keep the connection; a slow request body is not
    subject to it (it has its own, longer bound)."""
    with connect(port(stack)) as sock:
        for _ in range(3):
            time.sleep(KEEPALIVE * 0.6)  # the pause under test, not a wait for a state
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            status, _, _ = read_response(sock)
            assert status in (200, 503)
        request = send_request(stack, 5)
        head, _, body = request.partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n" + body[:10])
        time.sleep(KEEPALIVE * 1.5)  # the pause under test
        sock.sendall(body[10:])
        status, _, answer = read_response(sock)
        assert status == 200, answer


# ---- malformed and hostile requests ----------------------------------------------------------
MALFORMED = {
    "no-request-line": b"NONSENSE\r\n\r\n",
    "http-0.9": b"GET /healthz\r\n\r\n",
    "negative-length": b"POST /send HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "bad-length": b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    "plus-length": b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n{}   ",
    "underscore-length": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n" + b"{}" * 5
    ),
    "conflicting-lengths": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "length-and-chunked": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n"
    ),
    "gzip-chunked": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "identity-chunked": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"
    ),
    "two-te-headers": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked-twice": (
        b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked-http-1.0": (
        b"POST /send HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "cr-in-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: one\rtwo\r\n\r\n",
    "nul-in-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: one\x00two\r\n\r\n",
    "bare-lf": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "too-long-line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    "folded-header": b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n",
    "no-colon": b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
    "space-before-colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    "name-not-a-token": b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n",
    "too-many-headers": b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_gets_a_4xx_the_connection_closes_and_the_worker_keeps_serving(stack, raw):
    with connect(port(stack)) as sock:
        sock.sendall(raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # never answered
        status, headers, _ = read_response(sock)
        assert 400 <= status < 500
        assert headers.get("connection") == "close"
        assert is_closed(sock, 5)
    assert_still_serving(stack)


def test_an_unknown_transfer_coding_is_501_and_the_connection_closes(stack):
    """RFC 9112 6.1: a transfer coding the server does not understand is 501 (gunicorn's
    answer; it never reads such a body)."""
    with connect(port(stack)) as sock:
        sock.sendall(b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\nabc")
        status, _, _ = read_response(sock)
        assert status == 501
        assert is_closed(sock, 5)
    assert_still_serving(stack)


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"-1\r\nx\r\n0\r\n\r\n", b"+3\r\nabc\r\n0\r\n\r\n"],
    ids=["not-hex", "negative", "plus-sign"],
)
def test_an_invalid_chunk_size_is_400_and_the_connection_is_not_reused(stack, chunks):
    with connect(port(stack)) as sock:
        sock.sendall(
            post_head(stack, "Transfer-Encoding: chunked")
            + chunks
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # must not be served on it
        )
        status, headers, body = read_response(sock)
        assert status == 400, body
        assert headers["connection"] == "close"
        assert "malformed request body" in json.loads(body)["error"]
        assert is_closed(sock, 5), "the connection was reused after a broken chunk"
    assert_still_serving(stack)


# ---- the request head is at most 64 KiB ------------------------------------------------------
def test_a_large_head_within_the_limits_is_served(stack):
    """A request line of 8,000 bytes and 50 header lines of 1,000 bytes: ~58 KB."""
    head = (
        b"GET /healthz?"
        + b"a" * 8000
        + b" HTTP/1.1\r\n"
        + b"".join(f"X-{i:02d}: ".encode() + b"v" * 994 + b"\r\n" for i in range(50))
    )
    assert 57_000 < len(head) < 64 * 1024
    status, _, _ = exchange(port(stack), head + b"\r\n")
    assert status in (200, 503)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /" + b"a" * 65 * 1024 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: " + b"b" * 65 * 1024 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + (b"X-A: " + b"b" * 1000 + b"\r\n") * 66 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + (b"X-A: " + b"b" * 1500 + b"\r\n") * 44 + b"\r\n", 431),
    ],
    ids=["request-line", "one-header-line", "many-lines", "long-lines"],
)
def test_a_head_over_64_kib_is_refused_whatever_its_shape(stack, head, expected):
    assert len(head) > 64 * 1024
    with connect(port(stack)) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):  # refused before all was sent
            sock.sendall(head)
        status, _, _ = read_response(sock)
        assert status == expected
        assert is_closed(sock, 5)
    assert_still_serving(stack)


# ---- bodies: refused unread, cut when they stall ---------------------------------------------
def test_after_a_401_the_connection_closes_without_reading_the_body(stack):
    with connect(port(stack)) as sock:
        sock.sendall(post_head(None, "Content-Length: 1000000") + b'{"chat_id": 1')
        status, headers, _ = read_response(sock)
        assert status == 401
        assert headers["connection"] == "close"
        assert is_closed(sock, 2), "the gateway waited for a body it will not use"


def test_after_a_413_the_connection_closes_without_reading_the_body(stack):
    with connect(port(stack)) as sock:
        sock.sendall(post_head(stack, f"Content-Length: {3 * 1024 * 1024}") + b'{"chat_id": 1')
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert headers["connection"] == "close"
        assert is_closed(sock, 2), "the gateway waited for a body it will not use"
    assert_still_serving(stack)


def test_a_chunked_body_over_the_json_limit_is_cut_off_with_413(stack):
    chunk = b"a" * 65536
    with connect(port(stack)) as sock:
        sock.sendall(post_head(stack, "Transfer-Encoding: chunked"))
        try:
            for _ in range(40):  # 2.5 MiB > 2 MiB
                sock.sendall(b"10000\r\n" + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed: the answer is still readable
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert headers["connection"] == "close"
        assert is_closed(sock, 5)


def test_a_body_that_stalls_is_cut_off(stack):
    with connect(port(stack)) as sock:
        sock.sendall(post_head(stack, "Content-Length: 100") + b'{"chat_id": ')
        began = time.monotonic()
        sock.settimeout(BODY_STALL_TIMEOUT + 10)
        status, headers, body = read_response(sock)
        took = time.monotonic() - began
        assert status == 408, body
        assert BODY_STALL_TIMEOUT - 0.5 <= took <= BODY_STALL_TIMEOUT + 5
        assert headers["connection"] == "close"
        assert is_closed(sock, 5)
    assert_still_serving(stack)


# ---- the access log --------------------------------------------------------------------------
def test_gunicorns_access_log_works_when_an_operator_turns_it_on(tmp_path):
    """Off by default; ``--access-logfile`` writes lines, never a token."""
    with outbound_stack(
        tmp_path, workers=1, GUNICORN_CMD_ARGS="--access-logfile - --keep-alive 1"
    ) as logged:
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
