"""Outbound under failure: Bot API down, slow, dropping connections, 5xx, 429; pacing's
max wait; Idempotency-Key across a gateway restart."""

from __future__ import annotations

import concurrent.futures
import secrets
import time

import pytest
from outbound_fixtures import BOT, PRIVATE, outbound_stack

from harness.procs import wait_until
from harness.stack import Stack

pytestmark = pytest.mark.faults

SEND_TIMEOUT = 1.5
MAX_WAIT = 2.5  # slots at +0, +1, +2 s fit with a margin, +3 s does not


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    with outbound_stack(
        tmp_path_factory.mktemp("faults"),
        GATEWAY_SEND_TIMEOUT=str(SEND_TIMEOUT),
        GATEWAY_SEND_MAX_WAIT=str(MAX_WAIT),
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
def no_faults_left(out):
    yield
    out.emulator.clear_faults()


def subject(method: str) -> str:
    return f"telegram.out.{BOT}.{method}"


def timed_send(out: Stack, body: dict, **kwargs) -> tuple[int, dict, dict, float]:
    started = time.monotonic()
    status, answer, headers = out.send(body, **kwargs)
    return status, answer, headers, time.monotonic() - started


def api_up(out: Stack) -> bool:
    try:
        status, _, _ = out.emulator.call(out.tokens[BOT], "getMe", timeout=2)
    except OSError:
        return False
    return status == 200


def wait_api_up(out: Stack) -> None:
    wait_until(lambda: api_up(out), 15, "the Bot API to come back")


def sendmessage_calls(out: Stack) -> int:
    """sendMessage requests the emulator has received (counted on arrival, before a delay)."""
    return int(out.emulator.stats()["calls"].get("sendMessage", 0))


def test_bot_api_down_is_502_and_nothing_is_remembered(out):
    out.emulator.fault("down", duration=2.0)
    wait_until(lambda: not api_up(out), 2, "the Bot API to refuse connections")
    key = "down-" + secrets.token_hex(4)
    body = {"bot": BOT, "chat_id": PRIVATE[0], "text": "while down"}
    status, answer, _, took = timed_send(out, body, key=key)
    assert status == 502, answer
    assert "cannot connect" in answer["error"]
    assert took < SEND_TIMEOUT
    reply = out.request(subject("sendMessage"), {"chat_id": PRIVATE[1], "text": "x"})
    assert reply["ok"] is False and reply["error_code"] == 502
    assert reply["description"].startswith("Bad Gateway: ")
    wait_api_up(out)
    # the Bot API was never reached: the same key may send now
    status, answer, headers, _ = timed_send(out, body, key=key)
    assert status == 200 and "Idempotent-Replayed" not in headers
    assert out.sent_texts(PRIVATE[0]) == ["while down"]


def test_slow_bot_api_is_504_within_the_bound_and_workers_stay_responsive(out):
    out.emulator.fault("delay", delay=6.0, methods=["sendMessage"])
    before = sendmessage_calls(out)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        slow = [
            pool.submit(timed_send, out, {"bot": BOT, "chat_id": PRIVATE[10 + i], "text": "slow"})
            for i in range(6)
        ]
        # every slow send is waiting on the Bot API now
        wait_until(lambda: sendmessage_calls(out) >= before + 6, 5, "six sends in flight")
        healthz_started = time.monotonic()
        status, _ = out.gateway.get("/healthz", timeout=5)
        assert time.monotonic() - healthz_started < 0.5  # the hub is not blocked
        del status
        nats_started = time.monotonic()
        reply = out.request(subject("sendMessage"), {"chat_id": PRIVATE[20], "text": "slow"})
        assert reply["error_code"] == 504 and reply["description"].startswith("Gateway Timeout")
        assert time.monotonic() - nats_started < SEND_TIMEOUT + 1.0
        for future in slow:
            status, answer, _, took = future.result()
            assert status == 504, answer
            assert "no answer from the Bot API within 1.5 s" in answer["error"]
            assert SEND_TIMEOUT - 0.1 <= took < SEND_TIMEOUT + 1.0


def test_a_dropped_connection_is_502_and_the_outcome_is_kept(out):
    out.emulator.fault("drop", methods=["sendMessage"], count=1)
    key = "drop-" + secrets.token_hex(4)
    body = {"bot": BOT, "chat_id": PRIVATE[30], "text": "dropped"}
    status, answer, _, _ = timed_send(out, body, key=key)
    assert status == 502 and "broke" in answer["error"]
    # Telegram may have got it: a retry with the key replays the answer instead of sending
    status, again, headers, _ = timed_send(out, body, key=key)
    assert (status, again) == (502, answer)
    assert headers.get("Idempotent-Replayed") == "true"


def test_no_answer_in_time_is_504_and_the_outcome_is_kept(out):
    out.emulator.fault("delay", delay=SEND_TIMEOUT + 1.0, methods=["sendMessage"], count=1)
    key = "late-" + secrets.token_hex(4)
    body = {"bot": BOT, "chat_id": PRIVATE[36], "text": "late"}
    status, answer, _, _ = timed_send(out, body, key=key)
    assert status == 504, answer
    # the Bot API got it and may still send it: a retry with the key replays, it does not send
    status, again, headers, _ = timed_send(out, body, key=key)
    assert (status, again) == (504, answer)
    assert headers.get("Idempotent-Replayed") == "true"


def test_bot_api_500_is_502_with_its_description(out):
    out.emulator.fault("error", status=500, methods=["sendMessage"], count=1)
    status, answer, _, _ = timed_send(out, {"bot": BOT, "chat_id": PRIVATE[31], "text": "x"})
    assert status == 502
    assert answer["error_code"] == 500 and answer["description"] == "Internal Server Error"


def test_a_429_is_waited_out_and_retried(out):
    before = out.metric("telegram_gateway_botapi_429_total", bot=str(BOT))
    out.emulator.fault("error", status=429, retry_after=1, methods=["sendMessage"], count=1)
    status, answer, _, took = timed_send(out, {"bot": BOT, "chat_id": PRIVATE[32], "text": "ok"})
    assert status == 200, answer
    assert took >= 1.0
    assert out.sent_texts(PRIVATE[32]) == ["ok"]
    assert out.metric("telegram_gateway_botapi_429_total", bot=str(BOT)) == before + 1


def test_429_beyond_the_max_wait_is_passed_on_with_retry_after(out):
    out.emulator.fault("error", status=429, retry_after=30, methods=["sendMessage"], count=1)
    status, answer, headers, took = timed_send(
        out, {"bot": BOT, "chat_id": PRIVATE[33], "text": "x"}
    )
    assert status == 429 and headers["Retry-After"] == "30"
    assert answer["parameters"] == {"retry_after": 30}
    assert took < 1.0


def test_a_queue_longer_than_max_wait_is_429_with_retry_after(out):
    chat_id = PRIVATE[40]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda i: timed_send(out, {"bot": BOT, "chat_id": chat_id, "text": f"m{i}"}),
                range(4),
            )
        )
    statuses = sorted(status for status, *_ in results)
    assert statuses == [200, 200, 200, 429], [(r[0], r[1].get("error"), r[3]) for r in results]
    refused = next(r for r in results if r[0] == 429)
    assert refused[2]["Retry-After"] == "1"
    assert refused[1]["parameters"] == {"retry_after": 1}
    assert refused[3] < 0.5  # refused at once, not after waiting
    assert len(out.sent(chat_id)) == 3
    # the same over NATS: a 429 envelope with parameters.retry_after
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(
                lambda i: out.request(
                    subject("sendMessage"), {"chat_id": PRIVATE[42], "text": str(i)}
                ),
                range(4),
            )
        )
    limited = [r for r in replies if not r["ok"]]
    assert len(limited) == 1 and limited[0]["error_code"] == 429
    assert limited[0]["parameters"]["retry_after"] == 1


def test_idempotency_survives_a_gateway_restart(out):
    key = "restart-" + secrets.token_hex(4)
    body = {"bot": BOT, "chat_id": PRIVATE[50], "text": "before the restart"}
    first = out.send(body, key=key)
    assert first[0] == 200
    out.restart_gateway()
    second = out.send(body, key=key)
    assert (second[0], second[1]) == (first[0], first[1])
    assert second[2].get("Idempotent-Replayed") == "true"
    assert out.sent_texts(PRIVATE[50]) == ["before the restart"]


def test_nats_down_is_503_with_retry_after_at_once_and_nothing_is_sent_twice(out):
    """Without NATS nobody can say which worker paces the bot: /send answers 503 with
    Retry-After within a second (with or without an Idempotency-Key) and sends nothing; the
    same request with the same key sends exactly once when NATS is back."""
    chat = PRIVATE[51]
    key = "nats-down-" + secrets.token_hex(4)
    body = {"bot": BOT, "chat_id": chat, "text": "while NATS is down"}
    out.nats.stop()
    try:
        wait_until(lambda: out.gateway.get("/healthz")[0] == 503, 15, "the gateway sees it")
        for headers in ({"key": key}, {}):
            for _ in range(3):  # whichever worker answers
                status, answer, reply_headers, took = timed_send(out, body, **headers)
                assert status == 503, answer
                assert int(reply_headers["Retry-After"]) >= 1
                assert took < 1.0, f"503 after {took:.2f} s"
                assert "NATS" in answer["error"]
        assert out.sent_texts(chat) == []
    finally:
        out.nats.start()
    wait_until(lambda: out.gateway.get("/healthz")[0] == 200, 30, "healthy again")
    first = out.send(body, key=key)
    second = out.send(body, key=key)
    assert first[0] == 200, first[1]
    assert (second[0], second[1]) == (first[0], first[1])
    assert second[2].get("Idempotent-Replayed") == "true"
    assert out.sent_texts(chat) == ["while NATS is down"]
