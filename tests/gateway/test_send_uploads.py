"""Multipart uploads on ``/send``: spooled under ``<GATEWAY_STATE_DIR>/uploads``, at most
GATEWAY_UPLOAD_CONCURRENCY at once and GATEWAY_UPLOAD_MAX_BYTES on disk for the whole gateway
(two workers here), refused with a reason beyond that, the spool file removed whatever the
outcome."""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path

import pytest
from outbound_fixtures import BOT, PRIVATE, outbound_stack
from raw_http import connect, is_closed, read_response

from harness.procs import wait_until
from harness.stack import Stack
from telegram_gateway.config import load_settings
from telegram_gateway.errors import ConfigError, InvalidRequest
from telegram_gateway.web.uploads import UploadRefused, UploadSpool

MIB = 1024 * 1024
CONCURRENCY = 2
MAX_BYTES = 3 * MIB


# ---- the spool on its own --------------------------------------------------------------------
@pytest.mark.unit
def test_a_reservation_is_a_file_in_the_spool_directory_removed_afterwards(tmp_path):
    spool = UploadSpool(tmp_path / "uploads", concurrency=2, max_bytes=10 * MIB)
    with spool.reserve(MIB) as spool_file:
        (entry,) = (tmp_path / "uploads").iterdir()
        assert entry.name.startswith(f"{os.getpid()}.") and entry.name.endswith(f".{MIB}")
        assert oct(entry.stat().st_mode & 0o777) == "0o600"
        stream = spool_file()
        stream.write(b"data")
        assert spool.usage() == (1, MIB)
        with pytest.raises(InvalidRequest, match="one file per message"):
            spool_file()
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.unit
def test_the_limits_count_every_workers_uploads(tmp_path):
    spool = UploadSpool(tmp_path / "uploads", concurrency=2, max_bytes=10 * MIB)
    with spool.reserve(4 * MIB):
        # another worker's upload in progress: a file of its own in the same directory
        (tmp_path / "uploads" / f"{os.getpid() + 1}.abcd.{5 * MIB}").touch()
        with pytest.raises(UploadRefused) as busy, spool.reserve(1):
            pass
        assert busy.value.status == 503 and busy.value.retry_after
        assert "GATEWAY_UPLOAD_CONCURRENCY" in str(busy.value)
        (tmp_path / "uploads" / f"{os.getpid() + 1}.abcd.{5 * MIB}").unlink()
        with pytest.raises(UploadRefused) as full, spool.reserve(6 * MIB + 1):
            pass
        assert full.value.status == 503 and "GATEWAY_UPLOAD_MAX_BYTES" in str(full.value)
        with spool.reserve(6 * MIB):  # exactly the room that is left
            assert spool.usage() == (2, 10 * MIB)
    assert spool.usage() == (0, 0)


@pytest.mark.unit
def test_an_upload_larger_than_the_room_or_of_unknown_size_is_refused_outright(tmp_path):
    spool = UploadSpool(tmp_path / "uploads", concurrency=2, max_bytes=10 * MIB)
    with pytest.raises(UploadRefused) as too_large, spool.reserve(10 * MIB + 1):
        pass
    assert too_large.value.status == 413 and "GATEWAY_UPLOAD_MAX_BYTES" in str(too_large.value)
    with pytest.raises(UploadRefused) as unknown, spool.reserve(None):
        pass
    assert unknown.value.status == 411
    assert not (tmp_path / "uploads").exists() or not list((tmp_path / "uploads").iterdir())


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("GATEWAY_UPLOAD_CONCURRENCY", "0", "must be between 1 and 1024"),
        ("GATEWAY_UPLOAD_CONCURRENCY", "four", "must be a number"),
        ("GATEWAY_UPLOAD_MAX_BYTES", "1000", "must be between 1048576 and"),
        ("GATEWAY_UPLOAD_MAX_BYTES", "4G", "must be a number"),
    ],
)
def test_upload_settings_are_validated_and_named(name, value, reason):
    env = {
        "TELEGRAM_BOT_TOKENS": "123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-9A",
        "GATEWAY_API_TOKEN": "x" * 20,
        name: value,
    }
    with pytest.raises(ConfigError, match=f"{name} {reason}"):
        load_settings(env)


@pytest.mark.unit
def test_upload_settings_defaults():
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKENS": "123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-9A",
            "GATEWAY_API_TOKEN": "x" * 20,
        }
    )
    assert settings.upload_concurrency == 4
    # one upload of the local Bot API's largest file (2000 MB) fits
    assert settings.upload_max_bytes == 4 * 1024**3 > 2000 * MIB


# ---- on the running gateway ------------------------------------------------------------------
@pytest.fixture(scope="module")
def out(tmp_path_factory):
    with outbound_stack(
        tmp_path_factory.mktemp("uploads"),
        workers=2,
        GATEWAY_UPLOAD_CONCURRENCY=str(CONCURRENCY),
        GATEWAY_UPLOAD_MAX_BYTES=str(MAX_BYTES),
    ) as stack:
        yield stack


def spool_dir(out: Stack) -> Path:
    return out.gateway.state_dir / "uploads"


def spooled(out: Stack) -> list[Path]:
    directory = spool_dir(out)
    return sorted(directory.iterdir()) if directory.exists() else []


def multipart(chat_id: int, content: bytes, field: str = "document") -> tuple[bytes, str]:
    boundary = "----test" + secrets.token_hex(8)
    fields = {"bot": str(BOT), "chat_id": str(chat_id), "caption": "spooled"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="upload.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def head(out: Stack, content_type: str, framing: str) -> bytes:
    return (
        f"POST /send HTTP/1.1\r\nHost: gateway\r\nContent-Type: {content_type}\r\n"
        f"Authorization: Bearer {out.api_token}\r\n{framing}\r\n\r\n"
    ).encode()


class HeldUpload:
    """An upload whose body is sent up to ``held`` bytes, the rest on ``finish()``."""

    def __init__(self, out: Stack, chat_id: int, size: int, held: int = 1000) -> None:
        self.body, content_type = multipart(chat_id, os.urandom(size))
        self.held = held
        self.sock = connect(out.gateway.port, timeout=30)
        self.sock.sendall(head(out, content_type, f"Content-Length: {len(self.body)}"))
        self.sock.sendall(self.body[:held])

    def finish(self) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(self.body[self.held :])
        return read_response(self.sock)

    def close(self) -> None:
        self.sock.close()


def assert_spool_empties(out: Stack) -> None:
    wait_until(lambda: spooled(out) == [], 10, "the spool directory to be empty")


@pytest.mark.integration
def test_an_upload_is_spooled_under_the_state_directory_and_removed(out):
    held = HeldUpload(out, PRIVATE[80], MIB)
    try:
        wait_until(lambda: len(spooled(out)) == 1, 10, "the upload's spool file")
        (spool_file,) = spooled(out)
        assert spool_file.name.endswith(f".{len(held.body)}")  # reserved at its Content-Length
        status, _, answer = held.finish()
    finally:
        held.close()
    assert status == 200, answer
    assert json.loads(answer)["result"][0]["document"]["file_size"] == MIB
    assert_spool_empties(out)


@pytest.mark.integration
def test_beyond_the_concurrency_an_upload_is_503_with_retry_after(out):
    holding = [HeldUpload(out, PRIVATE[81 + i], MIB // 2) for i in range(CONCURRENCY)]
    try:
        wait_until(lambda: len(spooled(out)) == CONCURRENCY, 10, "the held uploads")
        body, content_type = multipart(PRIVATE[85], b"one more")
        with connect(out.gateway.port) as sock:
            sock.sendall(head(out, content_type, f"Content-Length: {len(body)}") + body[:100])
            status, headers, answer = read_response(sock)
            assert status == 503, answer
            assert headers["retry-after"] == "5"
            assert headers["connection"] == "close"
            assert "GATEWAY_UPLOAD_CONCURRENCY" in json.loads(answer)["error"]
            assert is_closed(sock, 2), "the refused upload's body was waited for"
        assert len(spooled(out)) == CONCURRENCY  # the refused one left nothing behind
        for upload in holding:
            status, _, answer = upload.finish()
            assert status == 200, answer
    finally:
        for upload in holding:
            upload.close()
    assert_spool_empties(out)
    # room again
    body, content_type = multipart(PRIVATE[85], b"one more")
    status, answer, _ = out.send_raw(body, content_type)
    assert status == 200, answer


@pytest.mark.integration
def test_beyond_the_total_on_disk_an_upload_is_503(out):
    held = HeldUpload(out, PRIVATE[86], 2 * MIB)
    try:
        wait_until(lambda: len(spooled(out)) == 1, 10, "the held upload")
        body, content_type = multipart(PRIVATE[87], os.urandom(MIB + MIB // 2))
        # the answer comes before the body is read: send a little of it, as a client that
        # waits for the answer while writing would (a client writing all of it first can
        # find the connection closed under it)
        with connect(out.gateway.port) as sock:
            sock.sendall(head(out, content_type, f"Content-Length: {len(body)}") + body[:1000])
            status, headers, raw = read_response(sock)
        answer = json.loads(raw)
        assert status == 503, answer
        assert headers["retry-after"] == "5"
        assert "GATEWAY_UPLOAD_MAX_BYTES" in answer["error"]
        status, _, answer_bytes = held.finish()
        assert status == 200, answer_bytes
    finally:
        held.close()
    assert_spool_empties(out)


@pytest.mark.integration
def test_an_upload_larger_than_the_total_is_413_unread(out):
    body, content_type = multipart(PRIVATE[88], os.urandom(4 * MIB))
    with connect(out.gateway.port) as sock:
        sock.sendall(head(out, content_type, f"Content-Length: {len(body)}") + body[:1000])
        status, headers, answer = read_response(sock)
        assert status == 413, answer
        assert headers["connection"] == "close"
        assert "GATEWAY_UPLOAD_MAX_BYTES" in json.loads(answer)["error"]
        assert is_closed(sock, 2)
    assert spooled(out) == []


@pytest.mark.integration
def test_a_chunked_upload_is_411(out):
    body, content_type = multipart(PRIVATE[89], b"chunked")
    with connect(out.gateway.port) as sock:
        sock.sendall(
            head(out, content_type, "Transfer-Encoding: chunked")
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        status, headers, answer = read_response(sock)
    assert status == 411, answer
    assert headers["connection"] == "close"
    assert "Content-Length" in json.loads(answer)["error"]
    assert spooled(out) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("field", "content", "chat_index", "expected"),
    [
        ("document", b"", 90, "the uploaded file is empty"),
        ("sticker", b"not a media field", 91, "files are accepted only as"),
        ("document", b"to a chat that does not exist", None, "chat not found"),
    ],
    ids=["empty-file", "not-a-media-field", "telegram-refuses"],
)
def test_the_spool_file_is_removed_when_the_upload_is_refused(
    out, field, content, chat_index, expected
):
    chat_id = PRIVATE[chat_index] if chat_index is not None else 999999999
    body, content_type = multipart(chat_id, content, field)
    status, answer, _ = out.send_raw(body, content_type)
    assert status == 400, answer
    assert expected in json.dumps(answer)
    assert_spool_empties(out)


@pytest.mark.integration
def test_the_spool_file_is_removed_when_the_client_goes_away(out):
    held = HeldUpload(out, PRIVATE[92], MIB, held=MIB // 2)
    wait_until(lambda: len(spooled(out)) == 1, 10, "the held upload")
    held.sock.shutdown(socket.SHUT_RDWR)
    held.close()
    assert_spool_empties(out)
    status, _ = out.gateway.get("/healthz")
    assert status == 200


@pytest.mark.integration
def test_two_files_in_one_upload_are_400_and_leave_nothing_behind(out):
    body, content_type = multipart(PRIVATE[93], b"first file")
    boundary = content_type.partition("boundary=")[2]
    second = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
        f'filename="second.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        "second file\r\n"
    ).encode()
    body = body.replace(f"--{boundary}--\r\n".encode(), second + f"--{boundary}--\r\n".encode())
    status, answer, _ = out.send_raw(body, content_type)
    assert status == 400, answer
    assert answer["error"] == "body: one file per message"
    assert_spool_empties(out)
    assert out.sent(PRIVATE[93]) == []
