"""Received files for agents, against the emulator in ``--local`` mode: NATS
``telegram.files.<bot>.get`` into the Object Store ``TELEGRAM_FILES``, ``GET /files/<bot>/<id>``,
routing rules with ``store_files``, and every refusal (bad request, unknown file, too large,
a file outside the bot's folder)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from outbound_fixtures import BOT, BOT_NAME, OTHER_BOT, PRIVATE, chats

from harness.procs import wait_until
from harness.stack import NATS_USER, Stack

pytestmark = pytest.mark.integration

MAX_BYTES = 200_000  # GATEWAY_FILES_MAX_BYTES of this module's gateway
STORED_CHAT = PRIVATE[70]  # a rule with store_files: true routes this chat's updates
PLAIN_CHAT = PRIVATE[71]  # a rule without it routes this one's
PDF = b"%PDF-1.4\n% a document a user sent\n" + bytes(range(256)) * 40
ROUTES = f"""
routes:
  - name: with-files
    match: {{chat_id: {STORED_CHAT}}}
    subjects: [agents.files.stored]
    store_files: true
  - name: without-files
    match: {{chat_id: {PLAIN_CHAT}}}
    subjects: [agents.files.plain]
"""


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    with Stack(root, {BOT: BOT_NAME, OTHER_BOT: None}, chats=chats(), gateway=False) as stack:
        stack.add_gateway(
            routes=ROUTES,
            TELEGRAM_API_DIR=str(stack.emulator.dir),
            GATEWAY_FILES_MAX_BYTES=str(MAX_BYTES),
        )
        yield stack


# ---- helpers ---------------------------------------------------------------------------------
def fetch(stack: Stack, file_id: Any, bot: str | int = BOT) -> dict[str, Any]:
    data = json.dumps({"file_id": file_id}).encode()
    return json.loads(stack.requester.request(f"telegram.files.{bot}.get", data, None, 60))


def object_bytes(stack: Stack, name: str) -> bytes | None:
    """The object as an agent reads it with nats-py (None: not in the bucket)."""

    async def read() -> bytes | None:
        nc = await nats.connect(stack.nats.url, user=NATS_USER, password=stack.nats_password)
        try:
            store = await nc.jetstream().object_store("TELEGRAM_FILES")
            try:
                return bytes((await store.get(name)).data)
            except nats.js.errors.ObjectNotFoundError:
                return None
        finally:
            await nc.close()

    return stack.requester.run(read(), 30)


def download(
    stack: Stack, bot: str | int, file_id: str, token: str | None = "default"
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(f"{stack.url}/files/{bot}/{file_id}")
    if token is not None:
        request.add_header(
            "Authorization", f"Bearer {stack.api_token if token == 'default' else token}"
        )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def served_path(stack: Stack, file_id: str, bot: int = BOT) -> Path:
    status, envelope, _ = stack.emulator.call(stack.tokens[bot], "getFile", file_id=file_id)
    assert status == 200 and envelope["ok"] is True, envelope
    return Path(envelope["result"]["file_path"])


def assert_no_secret(stack: Stack, raw: bytes) -> None:
    for token in stack.tokens.values():
        assert token.split(":", 1)[1].encode() not in raw


# ---- NATS: into the Object Store ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "data", "file_name", "mime_type"),
    [
        ("document", PDF, "report.pdf", "application/pdf"),
        ("voice", b"OggS\x00\x02" + bytes(range(256)) * 300, None, "audio/ogg"),
        ("photo", b"\xff\xd8\xff\xe0" + b"\x10JFIF" * 900, None, None),
    ],
    ids=["document", "voice", "photo"],
)
def test_nats_get_stores_the_exact_bytes_under_the_file_unique_id(
    fs, kind, data, file_name, mime_type
):
    injected = fs.emulator.inject_file(
        fs.tokens[BOT], kind, data, PRIVATE[72], file_name=file_name, mime_type=mime_type
    )
    reply = fetch(fs, injected["file_id"])
    assert reply["ok"] is True, reply
    result = reply["result"]
    assert result["bucket"] == "TELEGRAM_FILES"
    assert result["name"] == injected["file_unique_id"] == result["file_unique_id"]
    assert result["size"] == len(data)
    assert result["file_id"] == injected["file_id"]
    assert not result["file_path"].startswith("/")
    assert_no_secret(fs, json.dumps(reply).encode())
    assert object_bytes(fs, result["name"]) == data


def test_the_bot_name_works_and_a_second_request_reuses_the_object(fs):
    injected = fs.emulator.inject_file(fs.tokens[BOT], "document", b"reused " * 100, PRIVATE[73])
    before = fs.metric("telegram_gateway_files_total", outcome="reused", via="nats")
    first = fetch(fs, injected["file_id"], bot=BOT_NAME)
    second = fetch(fs, injected["file_id"])
    assert first == second and first["ok"] is True, (first, second)
    assert fs.metric("telegram_gateway_files_total", outcome="reused", via="nats") == before + 1
    assert object_bytes(fs, first["result"]["name"]) == b"reused " * 100


def test_a_file_larger_than_the_cap_is_413_and_not_stored(fs):
    data = bytes(MAX_BYTES + 1)
    injected = fs.emulator.inject_file(fs.tokens[BOT], "document", data, PRIVATE[74])
    reply = fetch(fs, injected["file_id"])
    assert reply["ok"] is False and reply["error_code"] == 413, reply
    assert "GATEWAY_FILES_MAX_BYTES" in reply["description"]
    assert str(MAX_BYTES + 1) in reply["description"]
    assert object_bytes(fs, injected["file_unique_id"]) is None
    # HTTP has no cap of its own: the file is still there for whoever needs it
    status, body, _ = download(fs, BOT, injected["file_id"])
    assert status == 200 and body == data


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"", 400, "file_id"),
        (b"[1]", 400, "file_id"),
        (b"{not json", 400, "file_id"),
        (b'{"file_id": 5}', 400, "file_id must be"),
        (b'{"file_id": "../../etc/passwd"}', 400, "file_id must be"),
        (b'{"file_id": "BQACAgIAAxkBAAnotafileidatall"}', 404, "invalid file_id"),
    ],
    ids=["empty", "array", "not-json", "number", "path", "unknown"],
)
def test_bad_nats_requests_get_an_envelope_naming_the_problem(fs, payload, code, words):
    raw = fs.requester.request(f"telegram.files.{BOT}.get", payload, None, 30)
    reply = json.loads(raw)
    assert reply["ok"] is False and reply["error_code"] == code, reply
    assert words in reply["description"]
    assert_no_secret(fs, raw)


# ---- HTTP: streamed -----------------------------------------------------------------------------
def test_http_streams_the_file_with_its_headers(fs):
    injected = fs.emulator.inject_file(
        fs.tokens[BOT], "document", PDF, PRIVATE[75], file_name="r.pdf", mime_type="application/pdf"
    )
    status, body, headers = download(fs, BOT_NAME, injected["file_id"])
    assert status == 200, body
    assert body == PDF
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Length"] == str(len(PDF))
    name = served_path(fs, injected["file_id"]).name
    assert headers["Content-Disposition"] == f"attachment; filename={name}"
    assert headers["X-Telegram-File-Unique-Id"] == injected["file_unique_id"]
    assert headers["X-Telegram-File-Path"] == f"documents/{name}"
    assert_no_secret(fs, json.dumps(headers).encode())


@pytest.mark.parametrize(
    ("bot", "file_id", "token", "code", "words"),
    [
        (BOT, "BQACAgIAAxkBAAnotafileidatall", "default", 404, "invalid file_id"),
        (BOT, "bad*file*id", "default", 400, "file_id must be"),
        ("nobot", "BQACAgIAAxkBAAnotafileidatall", "default", 404, "no bot"),
        (BOT, "BQACAgIAAxkBAAnotafileidatall", None, 401, "unauthorized"),
        (BOT, "BQACAgIAAxkBAAnotafileidatall", "wrong-token-of-24-chars!", 401, "unauthorized"),
    ],
    ids=["unknown", "malformed", "unknown-bot", "no-token", "wrong-token"],
)
def test_http_refusals_are_json_naming_the_problem(fs, bot, file_id, token, code, words):
    status, body, headers = download(fs, bot, file_id, token)
    assert status == code, body
    reply = json.loads(body)
    assert reply["ok"] is False and words in reply["error"], reply
    if code == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")


def test_another_bots_file_id_is_not_found_for_this_bot(fs):
    injected = fs.emulator.inject_file(fs.tokens[OTHER_BOT], "document", b"other", PRIVATE[76])
    assert fetch(fs, injected["file_id"])["error_code"] == 404
    assert download(fs, BOT, injected["file_id"])[0] == 404
    assert fetch(fs, injected["file_id"], bot=OTHER_BOT)["ok"] is True


# ---- only the bot's own folder under TELEGRAM_API_DIR ----------------------------------
def test_a_received_file_replaced_by_a_symlink_out_of_the_folder_is_refused(fs, tmp_path):
    secret = tmp_path / "not-for-agents.txt"
    secret.write_bytes(b"private")
    injected = fs.emulator.inject_file(fs.tokens[BOT], "document", b"original", PRIVATE[77])
    path = served_path(fs, injected["file_id"])
    path.unlink()
    path.symlink_to(secret)
    reply = fetch(fs, injected["file_id"])
    assert reply["ok"] is False and reply["error_code"] == 403, reply
    assert "TELEGRAM_API_DIR" in reply["description"]
    status, body, _ = download(fs, BOT, injected["file_id"])
    assert status == 403 and b"private" not in body
    assert object_bytes(fs, injected["file_unique_id"]) is None


def test_a_symlink_to_the_other_bots_folder_is_refused(fs):
    other = fs.emulator.inject_file(
        fs.tokens[OTHER_BOT], "document", b"of the other bot", PRIVATE[78]
    )
    other_path = served_path(fs, other["file_id"], bot=OTHER_BOT)
    injected = fs.emulator.inject_file(fs.tokens[BOT], "document", b"mine", PRIVATE[78])
    path = served_path(fs, injected["file_id"])
    path.unlink()
    path.symlink_to(other_path)
    assert fetch(fs, injected["file_id"])["error_code"] == 403
    assert download(fs, BOT, injected["file_id"])[0] == 403


def test_a_file_the_bot_sent_from_a_local_path_is_not_read(fs, tmp_path):
    # getFile names the path the server read it from: outside the bot's folder
    source = tmp_path / "sent.txt"
    source.write_bytes(b"sent from a local path")
    status, sent, _ = fs.emulator.call(
        fs.tokens[BOT], "sendDocument", chat_id=PRIVATE[79], document=source.as_uri()
    )
    assert status == 200, sent
    file_id = sent["result"]["document"]["file_id"]
    assert fetch(fs, file_id)["error_code"] == 403
    assert download(fs, BOT, file_id)[0] == 403


# ---- routing rules with store_files ------------------------------------------------------------
def test_a_store_files_rule_stores_the_file_before_the_copy_arrives(fs):
    data = b"voice note " * 500
    with fs.subscribe("agents.files.>") as sub:
        stored = fs.emulator.inject_file(fs.tokens[BOT], "voice", data, STORED_CHAT)
        plain = fs.emulator.inject_file(fs.tokens[BOT], "voice", b"not stored", PLAIN_CHAT)
        wait_until(lambda: len(sub.messages) >= 2, 30, "both routed copies")
        # the copy of the store_files rule is there: so is its file
        assert object_bytes(fs, stored["file_unique_id"]) == data
    subjects = sorted(message.subject for message in sub.messages)
    assert subjects == ["agents.files.plain", "agents.files.stored"]
    copy = next(m for m in sub.messages if m.subject == "agents.files.stored")
    assert json.loads(copy.data)["message"]["voice"]["file_unique_id"] == stored["file_unique_id"]
    assert object_bytes(fs, plain["file_unique_id"]) is None
    assert fs.metric("telegram_gateway_files_total", via="route", outcome="stored") >= 1


def test_the_object_store_is_created_with_the_configured_limits(fs):
    async def config() -> Any:
        nc = await nats.connect(fs.nats.url, user=NATS_USER, password=fs.nats_password)
        try:
            return (await nc.jetstream().stream_info("OBJ_TELEGRAM_FILES")).config
        finally:
            await nc.close()

    found = fs.requester.run(config(), 30)
    assert found.max_age == 86400
    assert found.max_bytes == 1024**3
    assert os.path.isdir(fs.emulator.dir)


def test_a_failing_bot_api_is_502_on_both_paths_and_nothing_is_stored(fs):
    injected = fs.emulator.inject_file(fs.tokens[BOT], "document", b"later", PRIVATE[80])
    fs.emulator.fault("error", status=500, methods=["getFile"], count=2)
    try:
        reply = fetch(fs, injected["file_id"])
        status, body, _ = download(fs, BOT, injected["file_id"])
    finally:
        fs.emulator.clear_faults()
    assert reply["ok"] is False and reply["error_code"] == 502, reply
    assert "getFile failed" in reply["description"]
    assert status == 502 and json.loads(body)["error_code"] == 502
    assert object_bytes(fs, injected["file_unique_id"]) is None
    # once the Bot API answers again, so does the gateway
    assert fetch(fs, injected["file_id"])["ok"] is True
