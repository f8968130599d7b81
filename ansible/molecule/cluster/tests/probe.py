"""Probes that run INSIDE one converged node of the cluster scenario, on its loopback.

Run with the gateway's interpreter (it has nats-py): the verify tests copy this file into each
container and call

    /opt/telegram-gateway/venv/bin/python /root/probe.py <probe>   < params.json

Parameters (secrets included) arrive as JSON on stdin, never on the command line; the result is
one JSON object on stdout. Only the standard library, nats-py and ../../shared/probe_http.py
(copied beside it) are used. The node's own Bot API emulator (control API) stands in for
Telegram, the `agents` NATS user for an agent; the gateway's NATS user (read, as root, from the
gateway's environment file) reads the ownership records in TELEGRAM_OWNERS, as the gateway's
own workers do.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import nats
from probe_http import GATEWAY, NATS_URL, STREAM, control, healthz, http, inject, main

MONITOR = "http://127.0.0.1:8222"
OWNERS = "TELEGRAM_OWNERS"
GATEWAY_ENV = "/etc/telegram-gateway/telegram-gateway.env"
# the gateway user's reply inboxes (the role lets it subscribe there only; telegram_gateway.bus)
GATEWAY_INBOX_PREFIX = "_GATEWAY_INBOX"


# --- NATS --------------------------------------------------------------------------------------
def gateway_credentials() -> tuple[str, str]:
    env = {}
    with open(GATEWAY_ENV) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key] = value.strip().strip('"').strip("'")
    return env.get("NATS_USER", "telegram-gateway"), env["NATS_PASSWORD"]


async def connect(p: dict[str, Any], as_gateway: bool = False) -> Any:
    user, password = (
        gateway_credentials() if as_gateway else (p["agents_user"], p["agents_password"])
    )
    return await nats.connect(
        NATS_URL,
        user=user,
        **({"inbox_prefix": GATEWAY_INBOX_PREFIX} if as_gateway else {}),
        password=password,
        connect_timeout=5,
        max_reconnect_attempts=0,
        allow_reconnect=False,
    )


async def _owners(p: dict[str, Any]) -> dict[str, Any]:
    nc = await connect(p, as_gateway=True)
    try:
        kv = await nc.jetstream().key_value(OWNERS)
        owners: dict[str, Any] = {}
        for bot_id in p["bot_ids"]:
            try:
                entry = await kv.get(f"bots.{bot_id}")
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                owners[str(bot_id)] = None
                continue
            record = json.loads(entry.value) if entry.value else {}
            owners[str(bot_id)] = record.get("worker")
        return owners
    finally:
        await nc.close()


def worker_host(worker: str | None) -> str | None:
    """Worker names are "<GATEWAY_HOST_NAME>-<pid>"."""
    return worker.rsplit("-", 1)[0] if worker else None


def probe_owners(p: dict[str, Any]) -> dict[str, Any]:
    """The worker (and host) that owns each bot, by the claims bots.<bot_id>."""
    owners = asyncio.run(_owners(p))
    return {"workers": owners, "hosts": {b: worker_host(w) for b, w in owners.items()}}


def probe_wait_owner_moved(p: dict[str, Any]) -> dict[str, Any]:
    """Wait until bot_id's claim names a worker of another host than p["from_host"]; seconds
    counted from the wall-clock time p["since"] (the controller's `docker kill`). When the new
    owner is this host (p["me"]), inject an update into its emulator right away."""
    deadline = time.monotonic() + p.get("timeout", 30.0)
    owners: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            owners = asyncio.run(_owners({**p, "bot_ids": [p["bot_id"]]}))
        except Exception as exc:  # the cluster electing a new leader: retry
            owners = {"error": repr(exc)}
        host = worker_host(owners.get(str(p["bot_id"])))
        if host and host != p["from_host"]:
            moved = {
                "host": host,
                "worker": owners[str(p["bot_id"])],
                "seconds": round(time.time() - p["since"], 2),
            }
            if host == p.get("me"):  # Telegram now delivers here: at once
                moved["injected"] = inject(p["bot_id"], 1)
                moved["injected_at"] = round(time.time() - p["since"], 2)
            return moved
        time.sleep(0.1)
    return {"host": None, "last": owners, "seconds": round(time.time() - p["since"], 2)}


def probe_monitor(p: dict[str, Any]) -> dict[str, Any]:
    """nats-server's monitoring endpoints (loopback): /varz, /routez, /jsz with streams."""
    out = {}
    for name, path in (
        ("varz", "varz"),
        ("routez", "routez"),
        ("jsz", "jsz?streams=true&config=true"),
    ):
        status, body = http("GET", f"{MONITOR}/{path}")
        out[name] = body if status == 200 else {"status": status, "body": body}
    return out


async def _stream_info(p: dict[str, Any]) -> dict[str, Any]:
    nc = await connect(p, as_gateway=True)
    try:
        js = nc.jetstream()
        result = {}
        for name in (STREAM, f"KV_{OWNERS}"):
            info = await js.stream_info(name)
            cluster = info.cluster
            result[name] = {
                "num_replicas": info.config.num_replicas,
                "leader": cluster.leader if cluster else None,
                "replicas": [
                    {"name": r.name, "current": r.current, "offline": r.offline}
                    for r in (cluster.replicas or [])
                ]
                if cluster
                else [],
                "last_seq": info.state.last_seq,
            }
        return result
    finally:
        await nc.close()


def probe_stream_info(p: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_stream_info(p))


def probe_meta_leader(p: dict[str, Any]) -> dict[str, Any]:
    """The JetStream meta group's leader (it places consumers, such as the gateway's watches)."""
    status, jsz = http("GET", f"{MONITOR}/jsz")
    meta = (jsz.get("meta_cluster") or {}) if status == 200 and isinstance(jsz, dict) else {}
    return {"leader": meta.get("leader")}


async def _last_seq(p: dict[str, Any]) -> int:
    nc = await connect(p)
    try:
        return (await nc.jetstream().stream_info(STREAM)).state.last_seq
    finally:
        await nc.close()


def probe_last_seq(p: dict[str, Any]) -> dict[str, Any]:
    return {"last_seq": asyncio.run(_last_seq(p))}


async def _read(p: dict[str, Any]) -> dict[str, Any]:
    """As an agent (the gateway creates the pull consumer, the agent binds to it): the messages
    of telegram.in.<bot>.> from p["start_seq"] until every Nats-Msg-Id of p["want"] was seen
    (or timeout), then p["linger"] seconds more for any repeat."""
    nc = await connect(p)
    started = time.monotonic()
    seen: list[dict[str, Any]] = []
    want = set(p["want"])
    try:
        js = nc.jetstream()
        name = f"probe-{os.getpid()}-{int(time.time() * 1000)}"
        request = json.dumps(
            {
                "name": name,
                "filter_subjects": [f"telegram.in.{p['bot_id']}.>"],
                "deliver_policy": "by_start_sequence",
                "opt_start_seq": max(p["start_seq"], 1),
                "inactive_threshold": 30,
            }
        ).encode()
        # as an agent does: a 503 (the stream electing a new leader after a node died) is
        # answered with retry_after; try again until the timeout
        while True:
            created = await nc.request("telegram.consumers.create", request, timeout=10)
            answer = json.loads(created.data)
            if answer.get("ok"):
                break
            retry = (answer.get("parameters") or {}).get("retry_after")
            if answer.get("error_code") != 503 or time.monotonic() - started > p.get("timeout", 20):
                raise RuntimeError(f"telegram.consumers.create: {answer}")
            await asyncio.sleep(retry or 1)
        sub = await js.pull_subscribe_bind(name, stream=STREAM)
        ids: set[str] = set()
        complete_at = None
        timeout, linger = p.get("timeout", 20.0), p.get("linger", 1.0)
        while time.monotonic() - started < timeout:
            if complete_at is None and want <= ids:
                complete_at = time.monotonic()
            if complete_at is not None and time.monotonic() - complete_at >= linger:
                break
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:  # nats-py raises its own subclass or the plain one
                # nothing yet, or (a node just died) the consumer's new leader not elected yet
                continue
            except nats.js.errors.ServiceUnavailableError:
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                headers = dict(m.headers or {})
                ids.add(headers.get("Nats-Msg-Id"))
                seen.append(
                    {
                        "subject": m.subject,
                        "seq": m.metadata.sequence.stream,
                        "msg_id": headers.get("Nats-Msg-Id"),
                        "update_id": json.loads(m.data).get("update_id"),
                        "stored": m.metadata.timestamp.timestamp(),
                    }
                )
                await m.ack()
        await sub.unsubscribe()
        return {"messages": seen, "seconds": round(time.monotonic() - started, 3)}
    finally:
        await nc.close()


def probe_read(p: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_read(p))


def probe_inject(p: dict[str, Any]) -> dict[str, Any]:
    """Updates for p["bot_id"] from a user, into this host's emulator (Telegram delivering to
    this host's Bot API server); their ids and the chat."""
    ids = inject(p["bot_id"], p.get("count", 1))
    res = control("GET", f"updates?bot_id={p['bot_id']}&since={ids[0]}")
    chats = sorted({u["message"]["chat"]["id"] for u in res["updates"] if "message" in u})
    return {"injected": ids, "chats": chats, "time": time.time()}


def probe_inject_flow(p: dict[str, Any]) -> dict[str, Any]:
    """Telegram delivering steadily: one update for p["bot_id"] every p["interval"] s for
    p["seconds"] s, each id printed on its own line as soon as this host's server accepted it
    (the controller kills the container meanwhile: the lines it got are the accepted ones)."""
    deadline = time.monotonic() + p.get("seconds", 30.0)
    ids: list[int] = []
    while time.monotonic() < deadline:
        ids += inject(p["bot_id"], 1)
        print(json.dumps({"update_id": ids[-1]}), flush=True)
        time.sleep(p.get("interval", 0.1))
    return {"injected": ids}


def probe_send(p: dict[str, Any]) -> dict[str, Any]:
    """POST /send on this host for p["bot_id"] (the bearer token)."""
    body = {"bot": p["bot_id"], "chat_id": p["chat_id"], "text": p["text"]}
    headers = {"Authorization": f"Bearer {p['api_token']}"}
    status, answer = http("POST", f"{GATEWAY}/send", body, headers, timeout=30)
    return {"status": status, "body": answer}


def probe_sent(p: dict[str, Any]) -> dict[str, Any]:
    """What this host's emulator recorded as sent by p["bot_id"]."""
    return {"sent": control("GET", f"sent?bot_id={p['bot_id']}")}


def probe_bots(p: dict[str, Any]) -> dict[str, Any]:
    """This host's emulator's bots: which have a launched instance."""
    return {str(b["id"]): b for b in control("GET", "bots")}


NATS_SERVER = "/usr/local/bin/nats-server"
CLUSTER_TLS = "/etc/nats-server/cluster"


def probe_intruder(p: dict[str, Any]) -> dict[str, Any]:
    """A nats-server started by hand on this host (root, outside the unit's sandbox) that tries
    to join the cluster through p["peer"]:6222, p["variant"]:
    - "no_tls": the right route password, no TLS (no certificate of the cluster's CA);
    - "wrong_password": this node's own certificate and CA, a wrong route password.
    Returns its log's errors; the peer's journal says why it refused (probe_journal)."""
    password = p["cluster_password"] if p["variant"] == "no_tls" else "not-the-route-password-0"
    url = f"nats-route://route:{urllib.parse.quote(password, safe='')}@{p['peer']}:6222"
    tls = (
        f'tls {{ cert_file: "{CLUSTER_TLS}/node.crt", key_file: "{CLUSTER_TLS}/node.key", '
        f'ca_file: "{CLUSTER_TLS}/ca.crt", verify: true }}'
        if p["variant"] == "wrong_password"
        else ""
    )
    name = f"intruder-{p['variant']}"
    conf = f"/root/{name}.conf"
    with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(
            f'server_name: "{name}"\nlisten: "127.0.0.1:14222"\nhttp: "127.0.0.1:18222"\n'
            f'cluster {{\n  name: "telegram"\n  listen: "127.0.0.1:16222"\n  {tls}\n'
            f'  routes: ["{url}"]\n}}\n'
        )
    log = f"/root/{name}.log"
    if os.path.exists(log):
        os.remove(log)
    server = subprocess.Popen([NATS_SERVER, "-c", conf, "-D", "-l", log])
    try:
        time.sleep(p.get("seconds", 4.0))
    finally:
        server.terminate()
        server.wait(timeout=10)
        os.remove(conf)
    with open(log) as f:
        lines = [line.strip() for line in f if "[ERR]" in line]
    return {"log": lines[-20:]}


def probe_journal(p: dict[str, Any]) -> dict[str, Any]:
    """nats-server's journal on this host since the wall-clock time p["since"]."""
    out = subprocess.run(
        [
            "journalctl",
            "-u",
            "nats-server.service",
            "--since",
            f"@{int(p['since'])}",
            "--no-pager",
            "-o",
            "cat",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {"lines": out.splitlines()}


def probe_healthz(p: dict[str, Any]) -> dict[str, Any]:
    status, body = healthz()
    return {"status": status, "body": body}


if __name__ == "__main__":
    main(globals())
