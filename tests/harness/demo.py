"""The local demo behind ``bash .ci/demo``: the whole stack on 127.0.0.1, no Telegram needed.

Starts nats-server (JetStream), the Bot API emulator (standing in for Telegram and the local
Bot API server) and the gateway under gunicorn with gevent workers, then shows it working:
/healthz, an update from a "user" arriving in JetStream, a reply through POST /send and one
through a NATS request, a document the user sent fetched through NATS and HTTP. With
``--once`` it stops after that (the test suite runs it so);
otherwise it keeps the stack up for you to try, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys

from harness.emulator import private_message
from harness.gateway import REPO
from harness.procs import wait_until
from harness.stack import Stack

BOT_ID = 7000000001
USER_CHAT = 424242


def show(title: str, command: str, output: object) -> None:
    print(f"\n### {title}\n$ {command}")
    print(output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False))
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="stop after the walkthrough")
    args = parser.parse_args()
    work = REPO / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    # no NATS password, so that the nats commands shown below work as printed
    # TELEGRAM_API_DIR: the emulator's --dir, where it keeps received files as the server does
    # GATEWAY_HOST_NAME empty: this machine's host name (in each update's Nats-Msg-Id)
    env = {"TELEGRAM_API_DIR": str(work / "emulator"), "GATEWAY_HOST_NAME": ""}
    with Stack(work, {BOT_ID: "demo"}, nats_auth=False, env=env) as stack:
        emulator, gateway = stack.emulator, stack.gateway
        print(
            f"nats-server {stack.nats.url} · emulator {emulator.api_url} "
            f"(control {emulator.control_url}) · gateway {gateway.url} "
            f"({gateway.workers} gevent workers)"
        )
        show("health", f"curl -s {gateway.url}/healthz", gateway.get("/healthz")[1])

        emulator.inject(BOT_ID, [private_message(USER_CHAT, "/ask what can you do?")])
        wait_until(lambda: stack.stream_count() >= 1, 10, "the update to reach JetStream")
        stored = stack.read_stream()[0]
        show(
            "a user writes to the bot: the update lands in JetStream",
            f"nats sub '{stored.subject}'",
            {"subject": stored.subject, "headers": stored.headers, "payload": stored.update},
        )

        wanted = {"name": "my-agent", "filter_subjects": [f"telegram.in.{BOT_ID}.message"]}
        consumer = stack.request("telegram.consumers.create", wanted, timeout=10)
        show(
            "an agent asks for its durable pull consumer of the stream (then binds and fetches)",
            f"nats req telegram.consumers.create '{json.dumps(wanted)}'",
            consumer,
        )

        body = {"bot": "demo", "chat_id": USER_CHAT, "text": "Hello from the gateway!"}
        status, answer, _ = stack.send(body)
        show(
            f"reply through POST /send (HTTP {status})",
            f"curl -s -H 'Authorization: Bearer $GATEWAY_API_TOKEN' "
            f"-d '{json.dumps(body)}' {gateway.url}/send",
            answer,
        )

        params = {"chat_id": USER_CHAT, "text": "And hello over NATS."}
        subject = f"telegram.out.{BOT_ID}.sendMessage"
        reply = stack.request(subject, params, timeout=10)
        show("reply through a NATS request", f"nats req {subject} '{json.dumps(params)}'", reply)

        document = b"%PDF-1.4\n% a document the user sent\n"
        received = emulator.inject_file(
            stack.tokens[BOT_ID], "document", document, USER_CHAT, "notes.pdf", "application/pdf"
        )
        file_id = received["file_id"]
        subject = f"telegram.files.{BOT_ID}.get"
        stored_file = stack.request(subject, {"file_id": file_id}, timeout=30)
        show(
            "a user sends a document: an agent stores it in the Object Store TELEGRAM_FILES",
            f"nats req {subject} '{json.dumps({'file_id': file_id})}'",
            stored_file,
        )
        status_file, got, _ = gateway.request(
            "GET",
            f"/files/{BOT_ID}/{file_id}",
            headers={"Authorization": f"Bearer {stack.api_token}"},
        )
        show(
            f"... or streams it over HTTP (HTTP {status_file})",
            f"curl -s -H 'Authorization: Bearer $GATEWAY_API_TOKEN' "
            f"{gateway.url}/files/{BOT_ID}/{file_id}",
            got,
        )

        sent = emulator.sent(BOT_ID, chat_id=USER_CHAT)
        show(
            "what 'Telegram' (the emulator) received",
            f"curl -s '{emulator.control_url}/_emulator/sent?bot_id={BOT_ID}'",
            [record["params"].get("text") for record in sent],
        )
        ok = (
            status == 200
            and reply.get("ok") is True
            and len(sent) == 2
            and stored_file.get("ok") is True
            and consumer.get("ok") is True
            and consumer["result"]["num_pending"] == 1
            and stored_file["result"]["size"] == len(document)
            and (status_file, got) == (200, document.decode())
        )
        print("\ndemo: " + ("everything works" if ok else "SOMETHING FAILED"))
        if not ok:
            return 1
        if args.once:
            return 0
        print("The stack stays up; try the commands above. Ctrl-C stops everything.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("\nstopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
