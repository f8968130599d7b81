"""Stuck clients against the gateway as configured for production (gunicorn.conf.py's
keep-alive, worker_connections and open-files limit; two workers): 2,000 connections that
each send part of a request head and stop do not keep ``/healthz`` from answering within
1 s, and every one of them is closed within 30 s."""

from __future__ import annotations

import resource
import selectors
import socket
import time

import pytest
from outbound_fixtures import outbound_stack
from raw_http import exchange

pytestmark = pytest.mark.integration

STUCK = 2000
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


@pytest.fixture
def open_files_for_the_clients():
    """The stuck clients' sockets are file descriptors of this process too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = STUCK + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {wanted}: raise it to run this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def timed_healthz(port: int) -> tuple[int, float]:
    began = time.perf_counter()
    status, _, _ = exchange(port, HEALTHZ)
    return status, time.perf_counter() - began


def test_2000_stuck_clients_do_not_stop_healthz_and_are_all_closed(
    tmp_path, open_files_for_the_clients
):
    with outbound_stack(tmp_path, workers=2) as stack:
        port = stack.gateway.port
        stuck: list[socket.socket] = []
        try:
            began = time.monotonic()
            for index in range(STUCK):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(f"POST /send HTTP/1.1\r\nHost: gateway\r\nX-Stuck: {index}".encode())
                stuck.append(sock)
            opened = time.monotonic() - began
            # the stuck heads are closed 5 s (keepalive) after they were accepted: sample
            # /healthz while they are all still open
            samples = []
            while time.monotonic() - began < opened + 3 and len(samples) < 20:
                samples.append(timed_healthz(port))
            assert samples, "the stuck connections took the whole window to open"
            slowest = max(took for _, took in samples)
            assert all(status == 200 for status, _ in samples), samples
            assert slowest < 1.0, f"/healthz took {slowest:.2f} s with {STUCK} stuck clients"
            # every stuck connection is closed by the gateway, within 30 s of being opened
            closed_at = wait_all_closed(stuck, began + 30)
            assert len(closed_at) == STUCK, f"{STUCK - len(closed_at)} stuck clients still open"
            assert max(closed_at) - began <= 30
        finally:
            for sock in stuck:
                sock.close()
        status, took = timed_healthz(port)
        assert status == 200 and took < 1.0


def wait_all_closed(socks: list[socket.socket], deadline: float) -> list[float]:
    """The time each socket saw the server's EOF (or reset), until ``deadline``."""
    closed_at: list[float] = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while len(closed_at) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data == b"":
                    closed_at.append(time.monotonic())
                    selector.unregister(sock)
    return closed_at
