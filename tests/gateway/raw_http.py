"""Raw-socket HTTP/1.1 for the tests that send what no HTTP library would (bad framing, half
a request head, a body that stops): the test is the client. Answers are read just enough to
get the status, the headers and a Content-Length body."""

from __future__ import annotations

import socket
import time

Answer = tuple[int, dict[str, str], bytes]


def connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> Answer:
    """One answer: (status, headers with lower-case names, body)."""
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


def exchange(port: int, raw: bytes) -> Answer:
    """``raw`` on a new connection; its answer."""
    with connect(port) as sock:
        sock.sendall(raw)
        return read_response(sock)


def is_closed(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``within`` seconds;
    bytes the server sends meanwhile are read and ignored."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def seconds_until_closed(sock: socket.socket, within: float) -> float | None:
    """How long the server took to close the connection, None if not within ``within``."""
    began = time.monotonic()
    return time.monotonic() - began if is_closed(sock, within) else None
