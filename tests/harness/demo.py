"""The local demo behind ``bash .ci/demo``: the whole stack on 127.0.0.1, no Telegram needed.

Starts nats-server (JetStream), the Bot API emulator (standing in for Telegram and the local
Bot API server) and the gateway under gunicorn with gevent workers, then shows it working:
/healthz, an update from a "user" arriving in JetStream, a reply through POST /send and one
through a NATS request. With ``--once`` it stops after that (the test suite runs it so);
otherwise it keeps the stack up for you to try, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import time

import nats

from harness.emulator import EmulatorProcess, private_message
from harness.gateway import REPO, GatewayProcess
from harness.nats import NatsServer
from harness.tokens import fake_token

BOT_ID = 7000000001
USER_CHAT = 424242


def show(title: str, command: str, output: object) -> None:
    print(f"\n### {title}\n$ {command}")
    print(output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False))
    sys.stdout.flush()


async def first_stored_update(url: str) -> tuple[str, dict[str, str], dict[str, object]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("telegram.in.>", durable=None, stream="TELEGRAM")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            msg = msgs[0]
            await msg.ack()
            return msg.subject, dict(msg.headers or {}), json.loads(msg.data)
        raise SystemExit("demo: the update did not reach JetStream within 10 s")
    finally:
        await nc.close()


async def nats_request(url: str, subject: str, params: dict[str, object]) -> dict[str, object]:
    nc = await nats.connect(url)
    try:
        reply = await nc.request(subject, json.dumps(params).encode(), timeout=10)
        return dict(json.loads(reply.data))
    finally:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="stop after the walkthrough")
    args = parser.parse_args()
    work = REPO / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    token = fake_token(BOT_ID)
    api_token = secrets.token_urlsafe(24)
    with (
        NatsServer(work / "nats") as nats_server,
        EmulatorProcess(work / "telegram-bot-api", bots=[token]) as emulator,
    ):
        gateway = GatewayProcess(
            work / "gateway",
            {
                "TELEGRAM_API_URL": emulator.api_url,
                "TELEGRAM_BOT_TOKENS": f"demo={token}",
                "NATS_URL": nats_server.url,
                "GATEWAY_API_TOKEN": api_token,
            },
        )
        with gateway:
            print(
                f"nats-server {nats_server.url} · emulator {emulator.api_url} "
                f"(control {emulator.control_url}) · gateway {gateway.url} (2 gevent workers)"
            )
            show("health", f"curl -s {gateway.url}/healthz", gateway.get("/healthz")[1])

            emulator.inject(BOT_ID, [private_message(USER_CHAT, "/ask what can you do?")])
            subject, headers, update = asyncio.run(first_stored_update(nats_server.url))
            show(
                "a user writes to the bot: the update lands in JetStream",
                f"nats sub '{subject}'",
                {"subject": subject, "headers": headers, "payload": update},
            )

            body = {"bot": "demo", "chat_id": USER_CHAT, "text": "Hello from the gateway!"}
            status, answer, _ = gateway.request(
                "POST", "/send", body, {"Authorization": f"Bearer {api_token}"}
            )
            show(
                f"reply through POST /send (HTTP {status})",
                f"curl -s -H 'Authorization: Bearer $GATEWAY_API_TOKEN' "
                f"-d '{json.dumps(body)}' {gateway.url}/send",
                answer,
            )

            params = {"chat_id": USER_CHAT, "text": "And hello over NATS."}
            subject = f"telegram.out.{BOT_ID}.sendMessage"
            reply = asyncio.run(nats_request(nats_server.url, subject, params))
            show(
                "reply through a NATS request", f"nats req {subject} '{json.dumps(params)}'", reply
            )

            sent = emulator.sent(BOT_ID, chat_id=USER_CHAT)
            show(
                "what 'Telegram' (the emulator) received",
                f"curl -s '{emulator.control_url}/_emulator/sent?bot_id={BOT_ID}'",
                [record["params"].get("text") for record in sent],
            )
            ok = status == 200 and reply.get("ok") is True and len(sent) == 2
            print("\ndemo: " + ("everything works" if ok else "SOMETHING FAILED"))
            if not ok:
                return 1
            if args.once:
                return 0
            print("The stack stays up; try the commands above. Ctrl-C stops everything.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("\nstopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
