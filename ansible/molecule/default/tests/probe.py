"""End-to-end probes that run INSIDE the converged container, on its loopback.

Run with the gateway's interpreter (it has nats-py): the verify tests copy this file into the
container and call

    /opt/telegram-gateway/venv/bin/python /root/probe.py <probe>   < params.json

Parameters (secrets included) arrive as JSON on stdin, never on the command line; the result is
one JSON object on stdout. Only the standard library, nats-py and ../../shared/probe_http.py
(copied beside it) are used. The probes act as the outside world does: the Bot API emulator's
control API stands in for Telegram users, the `agents` NATS user stands in for an agent,
curl-like HTTP calls for a service.
"""

from __future__ import annotations

import asyncio
import base64
import grp
import json
import os
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import nats
from probe_http import GATEWAY, NATS_URL, STREAM, control, healthz, http, inject, main


def emulator_updates(bot_id: int, since: int) -> dict[int, Any]:
    res = control("GET", f"updates?bot_id={bot_id}&since={since}")
    return {u["update_id"]: u for u in res["updates"]}


def systemctl(*args: str) -> str:
    return subprocess.run(
        ["systemctl", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


# --- NATS (as the agents user) -----------------------------------------------------------------
async def connect(p: dict[str, Any]) -> Any:
    return await nats.connect(
        NATS_URL,
        user=p["agents_user"],
        password=p["agents_password"],
        connect_timeout=5,
        max_reconnect_attempts=0,
        allow_reconnect=False,
    )


async def last_seq(p: dict[str, Any]) -> int:
    nc = await connect(p)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return info.state.last_seq
    finally:
        await nc.close()


async def read_stream(
    p: dict[str, Any], start_seq: int, want: set[int], timeout: float
) -> tuple[list[dict[str, Any]], float]:
    """Messages of telegram.in.<bot>.> from start_seq until every wanted update id was seen
    (or timeout); returns them with the seconds it took."""
    nc = await connect(p)
    started = time.monotonic()
    seen: list[dict[str, Any]] = []
    try:
        js = nc.jetstream()
        # the documented agent workflow: the gateway creates the pull consumer, the agent
        # binds to it (agents may not create consumers themselves)
        name = f"probe-{os.getpid()}-{int(time.time() * 1000)}"
        created = await nc.request(
            "telegram.consumers.create",
            json.dumps(
                {
                    "name": name,
                    "filter_subjects": [f"telegram.in.{p['bot_id']}.>"],
                    "deliver_policy": "by_start_sequence",
                    "opt_start_seq": max(start_seq, 1),
                    "inactive_threshold": 30,
                }
            ).encode(),
            timeout=10,
        )
        answer = json.loads(created.data)
        if not answer.get("ok"):
            raise RuntimeError(f"telegram.consumers.create: {answer}")
        sub = await js.pull_subscribe_bind(name, stream=STREAM)
        ids: set[int] = set()
        while not want <= ids and time.monotonic() - started < timeout:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                update = json.loads(m.data)
                ids.add(update.get("update_id"))
                seen.append(
                    {
                        "subject": m.subject,
                        "seq": m.metadata.sequence.stream,
                        "headers": dict(m.headers or {}),
                        "update": update,
                    }
                )
                await m.ack()
        await sub.unsubscribe()
        return seen, time.monotonic() - started
    finally:
        await nc.close()


# --- probes ------------------------------------------------------------------------------------
def probe_inbound(p: dict[str, Any]) -> dict[str, Any]:
    """Inject updates through the emulator; they must appear in stream TELEGRAM, on the right
    subject, with the right headers and the payload exactly as the Bot API returned it."""
    bot_id = p["bot_id"]
    start = asyncio.run(last_seq(p)) + 1
    t0 = time.monotonic()
    ids = inject(bot_id, p.get("count", 3))
    msgs, _ = asyncio.run(read_stream(p, start, set(ids), p.get("timeout", 5.0)))
    elapsed = time.monotonic() - t0
    originals = emulator_updates(bot_id, ids[0])
    return {"injected": ids, "messages": msgs, "seconds": round(elapsed, 3), "originals": originals}


def probe_chat(p: dict[str, Any]) -> dict[str, Any]:
    """A private chat the emulator knows (made by injecting a message from a user)."""
    ids = inject(p["bot_id"], 1)
    update = emulator_updates(p["bot_id"], ids[0])[ids[0]]
    return {"chat_id": update["message"]["chat"]["id"], "update_id": ids[0]}


def probe_send_http(p: dict[str, Any]) -> dict[str, Any]:
    body = {"chat_id": p["chat_id"], "text": p["text"]}
    sent_before = len(control("GET", f"sent?bot_id={p['bot_id']}"))
    results = {}
    for name, headers in (
        ("with_token", {"Authorization": f"Bearer {p['api_token']}"}),
        ("without_token", {}),
        ("wrong_token", {"Authorization": "Bearer not-the-token-0123456789"}),
    ):
        status, answer = http("POST", f"{GATEWAY}/send", body, headers, timeout=30)
        results[name] = {"status": status, "body": answer}
    sent = control("GET", f"sent?bot_id={p['bot_id']}")[sent_before:]
    return {**results, "recorded": sent}


async def _nats_request(p: dict[str, Any]) -> dict[str, Any]:
    nc = await connect(p)
    try:
        subject = f"telegram.out.{p['bot_id']}.sendMessage"
        payload = json.dumps({"chat_id": p["chat_id"], "text": p["text"]}).encode()
        msg = await nc.request(subject, payload, timeout=15)
        return {"subject": subject, "reply": json.loads(msg.data)}
    finally:
        await nc.close()


def probe_nats_request(p: dict[str, Any]) -> dict[str, Any]:
    sent_before = len(control("GET", f"sent?bot_id={p['bot_id']}"))
    result = asyncio.run(_nats_request(p))
    result["recorded"] = control("GET", f"sent?bot_id={p['bot_id']}")[sent_before:]
    return result


def probe_restarts(p: dict[str, Any]) -> dict[str, Any]:
    """Updates keep arriving (one every `interval` s) while nats-server and then
    telegram-bot-api are restarted; every injected update must reach the stream."""
    bot_id = p["bot_id"]
    start = asyncio.run(last_seq(p)) + 1
    injected: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def injector() -> None:
        while not stop.is_set():
            try:
                injected.extend(inject(bot_id, 1))
            except (OSError, RuntimeError) as exc:  # the emulator restarting: try again
                errors.append(type(exc).__name__)
            stop.wait(p.get("interval", 0.1))

    thread = threading.Thread(target=injector)
    thread.start()
    timeline = []
    try:
        for unit in p["units"]:
            time.sleep(p.get("pause", 3.0))
            t = time.monotonic()
            systemctl("restart", unit)
            timeline.append({"unit": unit, "restart_seconds": round(time.monotonic() - t, 2)})
        time.sleep(p.get("pause", 3.0))
    finally:
        stop.set()
        thread.join()
    msgs, waited = asyncio.run(read_stream(p, start, set(injected), p.get("timeout", 60.0)))
    got = [m["update"]["update_id"] for m in msgs]
    return {
        "injected": injected,
        "received": got,
        "inject_errors": len(errors),
        "timeline": timeline,
        "drain_seconds": round(waited, 2),
    }


GATEWAY_UNIT = "telegram-gateway.service"


def unit_number(prop: str) -> int:
    return int(systemctl("show", "-p", prop, "--value", GATEWAY_UNIT))


def await_restart(old: int, restarts_before: int, t0: float, timeout: float) -> dict[str, Any]:
    """After something made the gateway fail at ``t0``: wait until systemd runs a new main
    process and /healthz answers 200 (or ``timeout``)."""
    status, body, new, restarted_after = 0, None, old, None
    while time.monotonic() - t0 < timeout:
        new = unit_number("MainPID")
        if new not in (0, old):
            restarted_after = restarted_after or round(time.monotonic() - t0, 2)
            status, body = healthz()
            if status == 200:
                break
        time.sleep(0.25)
    return {
        "old_pid": old,
        "new_pid": new,
        "restarts_before": restarts_before,
        "restarts_after": unit_number("NRestarts"),
        "restarted_after": restarted_after,
        "healthz_status": status,
        "healthz": body,
        "seconds": round(time.monotonic() - t0, 2),
    }


def probe_kill9(p: dict[str, Any]) -> dict[str, Any]:
    """kill -9 of the gateway's main process: systemd restarts it, /healthz is 200 again."""
    old, restarts_before = unit_number("MainPID"), unit_number("NRestarts")
    t0 = time.monotonic()
    subprocess.run(["kill", "-9", str(old)], check=True)
    return await_restart(old, restarts_before, t0, p.get("timeout", 30.0))


OUTBOX = "/var/lib/telegram-gateway/outbox"


async def read_object(js: Any, name: str) -> bytes:
    """An object of TELEGRAM_FILES as the README shows agents reading it: the metadata, then
    each chunk, by direct gets (agents may not create the consumer nats-py's get uses)."""
    stream = "OBJ_TELEGRAM_FILES"
    encoded = base64.urlsafe_b64encode(name.encode()).decode()
    meta = await js.get_last_msg(stream, f"$O.TELEGRAM_FILES.M.{encoded}", direct=True)
    info = json.loads(meta.data)
    data, seq = b"", 0
    for _ in range(info["chunks"]):
        chunk = await js.get_msg(
            stream,
            seq=seq + 1,
            subject=f"$O.TELEGRAM_FILES.C.{info['nuid']}",
            next=True,
            direct=True,
        )
        data, seq = data + chunk.data, chunk.seq
    return data


async def _files_over_nats(p: dict[str, Any], file_id: str) -> dict[str, Any]:
    """As the agents user: getFile through the gateway, then the documented way to the bytes
    (telegram.files.<bot>.get, then direct gets of its chunks), then a local file outside
    GATEWAY_MEDIA_DIRS as a file:// URI."""
    nc = await connect(p)

    async def ask(subject: str, body: dict[str, Any]) -> bytes:
        msg = await nc.request(f"telegram.{subject}", json.dumps(body).encode(), timeout=60)
        return msg.data

    try:
        bot = p["bot_id"]
        raw_get_file = await ask(f"out.{bot}.getFile", {"file_id": file_id})
        stored = json.loads(await ask(f"files.{bot}.get", {"file_id": file_id}))
        data = b""
        if stored.get("ok"):
            data = await read_object(nc.jetstream(), stored["result"]["name"])
        passwd = {"chat_id": p["chat_id"], "document": "file:///etc/passwd"}
        refused = json.loads(await ask(f"out.{bot}.sendDocument", passwd))
        return {
            "get_file_raw": raw_get_file.decode(),
            "stored": stored,
            "object_hex": data.hex(),
            "passwd_over_nats": refused,
        }
    finally:
        await nc.close()


def probe_files(p: dict[str, Any]) -> dict[str, Any]:
    """A user sends a document (the emulator's control API); an agent gets its bytes over NATS
    and over HTTP; getFile carries no secret; /etc/passwd is refused on both paths and
    nothing reaches the Bot API; a file in the outbox goes out."""
    bot, chat_id = p["bot_id"], p["chat_id"]
    data = bytes(range(256)) * 64 + b"molecule"
    received = control(
        "POST",
        "files",
        {
            "bot_id": bot,
            "chat_id": chat_id,
            "kind": "document",
            "data": base64.b64encode(data).decode(),
            "file_name": "molecule.bin",
        },
    )
    file_id = received["file_id"]
    bearer = {"Authorization": f"Bearer {p['api_token']}"}
    sent_before = len(control("GET", f"sent?bot_id={bot}"))
    result = asyncio.run(_files_over_nats(p, file_id))
    request = urllib.request.Request(f"{GATEWAY}/files/{bot}/{file_id}", headers=bearer)
    with urllib.request.urlopen(request, timeout=60) as resp:
        got, headers = resp.read(), dict(resp.headers)
    status_unknown, _ = http("GET", f"{GATEWAY}/files/{bot}/AAAAunknown", headers=bearer)
    passwd = http(
        "POST", f"{GATEWAY}/send", {"chat_id": chat_id, "document": "/etc/passwd"}, bearer, 15
    )
    refused_sends = control("GET", f"sent?bot_id={bot}")[sent_before:]
    # the operator's way to send a local file: the outbox, group-readable by the server
    outbox_file = f"{OUTBOX}/molecule-outbox.txt"
    with open(outbox_file, "w") as f:
        f.write("from the outbox\n")
    subprocess.run(["chgrp", "telegram-bot-api", outbox_file], check=True)
    subprocess.run(["chmod", "0640", outbox_file], check=True)
    body = {"chat_id": chat_id, "document": outbox_file}
    outbox = http("POST", f"{GATEWAY}/send", body, bearer, 30)
    sent_after = control("GET", f"sent?bot_id={bot}")[sent_before + len(refused_sends) :]
    return {
        **result,
        "expected_hex": data.hex(),
        "received": {k: received[k] for k in ("file_id", "file_unique_id", "file_size")},
        "http_hex": got.hex(),
        "http_headers": headers,
        "http_unknown_status": status_unknown,
        "passwd_over_http": {"status": passwd[0], "body": passwd[1]},
        "refused_sends": refused_sends,
        "outbox": {"status": outbox[0], "body": outbox[1]},
        "outbox_sends": sent_after,
    }


def probe_file_access(p: dict[str, Any]) -> dict[str, Any]:
    """What the gateway's processes may read: its groups, and the modes of what the Bot API
    server stored for the bot."""
    with open(f"/proc/{unit_number('MainPID')}/status") as f:
        groups = next(line.split()[1:] for line in f if line.startswith("Groups:"))
    names = sorted(grp.getgrgid(int(g)).gr_name for g in groups)
    root = "/var/lib/telegram-bot-api"
    modes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root).replace(p["bot_token_secret"], "<secret>")
            modes[rel] = f"{stat.S_IMODE(st.st_mode):04o} {grp.getgrgid(st.st_gid).gr_name}"
    top = os.stat(root)
    return {"groups": names, "state_dir_mode": f"{stat.S_IMODE(top.st_mode):04o}", "modes": modes}


def probe_watchdog(p: dict[str, Any]) -> dict[str, Any]:
    """SIGSTOP of every gunicorn worker (a blocked event loop everywhere): systemd's watchdog
    restarts the gateway; /healthz is 200 again."""
    old, restarts_before = unit_number("MainPID"), unit_number("NRestarts")
    with open(f"/proc/{old}/task/{old}/children") as f:
        workers = [int(pid) for pid in f.read().split()]
    since = time.time()
    t0 = time.monotonic()
    for pid in workers:
        os.kill(pid, 19)  # SIGSTOP
    result = await_restart(old, restarts_before, t0, p.get("timeout", 90.0))
    journal = subprocess.run(
        ["journalctl", "-u", GATEWAY_UNIT, "--since", f"@{int(since)}", "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
    ).stdout
    watchdog = [line for line in journal.splitlines() if "atchdog" in line]
    return {**result, "workers": workers, "watchdog_lines": watchdog}


if __name__ == "__main__":
    main(globals())
