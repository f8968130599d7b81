"""NATS request/reply on ``telegram.out.<bot>.<method>`` against the real stack."""

from __future__ import annotations

import concurrent.futures
import itertools
import secrets

import nats.errors
import pytest
from outbound_fixtures import (
    BOT,
    BOT_NAME,
    GROUP,
    NEW_SUPERGROUP,
    OLD_GROUP,
    OTHER_BOT,
    PRIVATE,
    outbound_stack,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    with outbound_stack(tmp_path_factory.mktemp("nats")) as stack:
        yield stack


def subject(method: str, bot: int | str = BOT) -> str:
    return f"telegram.out.{bot}.{method}"


def test_send_message_replies_with_the_bot_apis_envelope(out):
    reply = out.request(subject("sendMessage"), {"chat_id": PRIVATE[0], "text": "over NATS"})
    assert reply["ok"] is True
    (record,) = out.sent(PRIVATE[0])
    assert reply["result"] == record["result"]
    assert reply["result"]["text"] == "over NATS"


def test_bot_by_configured_name(out):
    reply = out.request(subject("sendMessage", BOT_NAME), {"chat_id": PRIVATE[1], "text": "hi"})
    assert reply["ok"] is True and out.sent_texts(PRIVATE[1]) == ["hi"]
    reply = out.request(subject("sendMessage", OTHER_BOT), {"chat_id": PRIVATE[1], "text": "2"})
    assert reply["ok"] is True and out.sent_texts(PRIVATE[1], OTHER_BOT) == ["2"]


def test_telegram_errors_come_back_unchanged(out):
    reply = out.request(subject("sendMessage"), {"chat_id": 42, "text": "x"})
    assert reply == {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    reply = out.request(subject("sendMessage"), {"chat_id": PRIVATE[2]})
    assert reply["error_code"] == 400 and "text is empty" in reply["description"]


@pytest.mark.parametrize("method", ["getUpdates", "setWebhook", "logOut", "banChatMember"])
def test_methods_outside_the_allow_list_are_refused(out, method):
    reply = out.request(subject(method), {"chat_id": PRIVATE[3]})
    assert reply["ok"] is False and reply["error_code"] == 403
    assert method in reply["description"] and "allow-list" in reply["description"]


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        b'{"chat_id":1,"text":"\\ud800"}',
        b"[" * 50000,
    ],
)
def test_malformed_payloads_get_an_error_reply(out, payload):
    reply = out.request(subject("sendMessage"), payload)
    assert reply["ok"] is False and reply["error_code"] == 400
    assert "JSON object" in reply["description"]


def test_method_names_are_case_insensitive_like_the_bot_api(out):
    reply = out.request(subject("SENDMESSAGE"), {"chat_id": PRIVATE[4], "text": "loud"})
    assert reply["ok"] is True


def test_an_unknown_bot_has_no_responder(out):
    with pytest.raises(nats.errors.NoRespondersError):
        out.request(subject("sendMessage", 123), {"chat_id": PRIVATE[5], "text": "x"}, timeout=5)


def test_other_allowed_methods(out):
    sent = out.request(subject("sendMessage"), {"chat_id": GROUP, "text": "to edit"})
    message_id = sent["result"]["message_id"]
    edited = out.request(
        subject("editMessageText"),
        {"chat_id": GROUP, "message_id": message_id, "text": "edited"},
    )
    assert edited["ok"] is True and edited["result"]["text"] == "edited"
    action = out.request(subject("sendChatAction"), {"chat_id": GROUP, "action": "typing"})
    assert action == {"ok": True, "result": True}
    deleted = out.request(subject("deleteMessage"), {"chat_id": GROUP, "message_id": message_id})
    assert deleted == {"ok": True, "result": True}
    me = out.request(subject("getMe"), b"")
    assert me["ok"] is True and me["result"]["id"] == BOT


def test_migration_is_followed_and_reported(out):
    reply = out.request(subject("sendMessage"), {"chat_id": OLD_GROUP, "text": "moved"})
    assert reply["ok"] is True
    assert reply["migrated_to_chat_id"] == NEW_SUPERGROUP
    assert reply["result"]["chat"]["id"] == NEW_SUPERGROUP


def test_each_request_is_answered_once_by_the_queue_group(out):
    chats = PRIVATE[10:40]
    with concurrent.futures.ThreadPoolExecutor(len(chats)) as pool:
        replies = list(
            pool.map(
                lambda c: out.request(subject("sendMessage"), {"chat_id": c, "text": f"q{c}"}),
                chats,
            )
        )
    assert all(reply["ok"] for reply in replies)
    for chat_id in chats:
        assert out.sent_texts(chat_id) == [f"q{chat_id}"]


def test_idempotency_key_header(out):
    key = secrets.token_hex(8)
    payload = {"chat_id": PRIVATE[50], "text": "once over NATS"}
    first = out.request(subject("sendMessage"), payload, headers={"Idempotency-Key": key})
    second = out.request(subject("sendMessage"), payload, headers={"Idempotency-Key": key})
    assert first == second and first["ok"] is True
    assert out.sent_texts(PRIVATE[50]) == ["once over NATS"]
    other = out.request(
        subject("sendMessage"), {**payload, "text": "other"}, headers={"Idempotency-Key": key}
    )
    assert other["ok"] is False and other["error_code"] == 422


def test_a_retry_listing_the_parameters_in_another_order_is_the_same_request(out):
    """One fingerprint recipe for /send and NATS: canonical JSON, keys sorted."""
    key = secrets.token_hex(8)
    first = out.request(
        subject("sendMessage"),
        {"chat_id": PRIVATE[55], "text": "in order", "parse_mode": "HTML"},
        headers={"Idempotency-Key": key},
    )
    second = out.request(
        subject("sendMessage"),
        {"parse_mode": "HTML", "text": "in order", "chat_id": PRIVATE[55]},
        headers={"Idempotency-Key": key},
    )
    assert first == second and first["ok"] is True
    assert out.sent_texts(PRIVATE[55]) == ["in order"]


def test_one_sender_paces_http_and_nats_together(out):
    """Alternating paths for one private chat: Telegram's 1 message/s holds across both."""
    chat_id = PRIVATE[60]
    for index in range(4):
        if index % 2:
            assert out.send({"bot": BOT, "chat_id": chat_id, "text": str(index)})[0] == 200
        else:
            reply = out.request(subject("sendMessage"), {"chat_id": chat_id, "text": str(index)})
            assert reply["ok"] is True
    records = out.sent(chat_id)
    assert [r["result"]["text"] for r in records] == ["0", "1", "2", "3"]
    times = [r["time"] for r in records]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))
    assert out.emulator.stats()["flood_429"] == 0


def shared_state(out) -> dict[str, dict[str, int]]:
    """What the gateway keeps in NATS: every key of its Key-Value buckets but the leases
    (renewed every second) with its revision."""
    return {"idempotency": out.kv_keys("TELEGRAM_IDEMPOTENCY")}


@pytest.mark.parametrize(
    "chat_id",
    ["12\x0034", "@" + "a" * 400_000, "", " ", "@", "@bad name", "1e5", True, 1.5, 0, 2**60, [1]],
    ids=[
        "nul",
        "400kB-username",
        "empty",
        "blank",
        "at",
        "space",
        "float-text",
        "bool",
        "float",
        "zero",
        "huge",
        "list",
    ],
)
def test_a_malformed_chat_id_is_refused_before_it_touches_any_state(out, chat_id):
    """A 400 envelope naming the field; no Idempotency-Key is claimed, nothing is paced or sent
    (the pacing of a good message right after it is checked by the tests around)."""
    before = shared_state(out)
    sent_before = len(out.sent())
    for method, params in (
        ("sendMessage", {"chat_id": chat_id, "text": "x"}),
        ("copyMessage", {"chat_id": PRIVATE[70], "from_chat_id": chat_id, "message_id": 1}),
    ):
        reply = out.request(subject(method), params, headers={"Idempotency-Key": "k-bad-chat"})
        field = "chat_id" if method == "sendMessage" else "from_chat_id"
        assert reply["ok"] is False and reply["error_code"] == 400, reply
        assert reply["description"].startswith(f"Bad Request: {field}: "), reply
    assert shared_state(out) == before
    assert len(out.sent()) == sent_before
    # the bot's calendar is intact: two messages to one chat right after keep their distance
    chat = PRIVATE[73]
    for text in ("a", "b"):
        assert out.request(subject("sendMessage"), {"chat_id": chat, "text": text})["ok"]
    first, second = (record["time"] for record in out.sent(chat)[-2:])
    assert second - first >= 1.0


def test_chat_ids_as_text_and_usernames_are_accepted(out):
    reply = out.request(subject("sendMessage"), {"chat_id": str(PRIVATE[71]), "text": "t"})
    assert reply["ok"] is True and reply["result"]["chat"]["id"] == PRIVATE[71]


def test_an_idempotency_key_on_a_read_method_is_ignored(out):
    """Reading changes nothing, so nothing is remembered: the same key then sends."""
    key = secrets.token_hex(8)
    me = out.request(subject("getMe"), b"", headers={"Idempotency-Key": key})
    chat = out.request(subject("getChat"), {"chat_id": GROUP}, headers={"Idempotency-Key": key})
    assert me["ok"] is True and chat["ok"] is True
    payload = {"chat_id": PRIVATE[72], "text": "after reads"}
    sent = out.request(subject("sendMessage"), payload, headers={"Idempotency-Key": key})
    assert sent["ok"] is True, sent
    assert out.sent_texts(PRIVATE[72]) == ["after reads"]


def test_edits_and_other_writes_take_slots_of_the_bots_budget(out):
    """40 edits at once (in 40 chats) would be a 429 from a strict Telegram if they were not
    paced; chat actions, deletes and callback answers wait for slots too."""
    chats = PRIVATE[73:113]
    waited = out.metric("telegram_gateway_send_wait_seconds_count", bot=str(BOT))
    ids = {}
    for chat_id in chats:
        reply = out.request(subject("sendMessage"), {"chat_id": chat_id, "text": "v1"})
        ids[chat_id] = reply["result"]["message_id"]
    flood_before = out.emulator.stats()["flood_429"]

    def edit(chat_id: int) -> dict:
        params = {"chat_id": chat_id, "message_id": ids[chat_id], "text": "v2"}
        return out.request(subject("editMessageText"), params, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(len(chats)) as pool:
        replies = list(pool.map(edit, chats))
    assert all(reply["ok"] for reply in replies), replies
    assert out.emulator.stats()["flood_429"] == flood_before
    for method, params in (
        ("sendChatAction", {"chat_id": chats[0], "action": "typing"}),
        ("deleteMessage", {"chat_id": chats[0], "message_id": ids[chats[0]]}),
    ):
        assert out.request(subject(method), params)["ok"] is True
    after = out.metric("telegram_gateway_send_wait_seconds_count", bot=str(BOT))
    assert after - waited == len(chats) * 2 + 2
