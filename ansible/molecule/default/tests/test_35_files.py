"""Files users send, through the deployed services (probe.py inside the host).

An injected document is fetched as the `agents` NATS user (telegram.files.<bot>.get, then the
Object Store) and over HTTP (GET /files/<bot>/<file_id>) with its exact bytes; getFile from
the agents user carries no part of the token; /etc/passwd is refused over HTTP and NATS and
nothing reaches the Bot API; a file in the outbox goes out. The gateway runs with the Bot API
server's group and reads its downloaded files, which are group-readable, never writable.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import BOT_ID


@pytest.fixture(scope="module")
def files(probe, agents, secrets):
    chat_id = probe("chat", **agents)["chat_id"]
    return probe("files", chat_id=chat_id, api_token=secrets["gateway_api_token"], **agents)


def test_agents_get_a_received_document_over_nats_with_its_exact_bytes(files):
    stored = files["stored"]
    assert stored["ok"] is True, stored
    result = stored["result"]
    assert result["bucket"] == "TELEGRAM_FILES"
    assert result["name"] == files["received"]["file_unique_id"]
    assert result["size"] == files["received"]["file_size"] == len(files["expected_hex"]) // 2
    assert files["object_hex"] == files["expected_hex"]


def test_agents_get_a_received_document_over_http_with_its_exact_bytes(files):
    assert files["http_hex"] == files["expected_hex"]
    headers = {k.lower(): v for k, v in files["http_headers"].items()}
    assert int(headers["content-length"]) == files["received"]["file_size"]
    # the real server ignores the sender's file name (tdlib option ignore_file_names):
    # documents/file_<n>.<ext>, and so does the name the gateway hands out
    assert re.fullmatch(r"attachment; filename=file_\d+\.bin", headers["content-disposition"])
    assert files["http_unknown_status"] == 404


def test_get_file_from_the_agents_user_has_no_token(files, secrets):
    raw = files["get_file_raw"]
    reply = json.loads(raw)
    assert reply["ok"] is True, reply
    print(f"\ngetFile as agents: {raw}")
    assert secrets["bot_token_secret"] not in raw
    assert secrets["bot_token_secret"][:12] not in raw
    assert "/var/lib/telegram-bot-api" not in raw


def test_etc_passwd_is_refused_and_nothing_is_sent(files):
    http = files["passwd_over_http"]
    assert http["status"] == 400, http
    assert "GATEWAY_MEDIA_DIRS" in json.dumps(http["body"])
    nats = files["passwd_over_nats"]
    assert nats["ok"] is False and nats["error_code"] == 400, nats
    assert "GATEWAY_MEDIA_DIRS" in nats["description"]
    assert files["refused_sends"] == []


def test_a_file_in_the_outbox_is_sent(files):
    assert files["outbox"]["status"] == 200, files["outbox"]
    documents = [r for r in files["outbox_sends"] if r["method"].lower() == "senddocument"]
    assert len(documents) == 1, files["outbox_sends"]


def test_the_gateway_reads_the_servers_files_and_may_not_write_them(probe, secrets):
    access = probe("file_access", bot_token_secret=secrets["bot_token_secret"] + "A")
    print(f"\ngateway groups {access['groups']}; state dir {access['state_dir_mode']}")
    assert "telegram-bot-api" in access["groups"]
    assert access["state_dir_mode"] == "0750"
    bot_dir = f"{BOT_ID}~<secret>"
    received = {
        path: mode
        for path, mode in access["modes"].items()
        if path.startswith(f"{bot_dir}/documents/")
    }
    assert received, access["modes"]
    for path, mode in access["modes"].items():
        digits, group = mode.split()
        assert int(digits, 8) & 0o022 == 0, f"{path} is writable by others: {mode}"
        if path in received:
            assert (digits, group) == ("0640", "telegram-bot-api"), (path, mode)
    assert access["modes"][f"{bot_dir}/td.binlog"].split()[0] == "0600"
