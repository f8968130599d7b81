"""Configuration files as the roles render them: nats-server.conf, environment files, routes.

Integration tier: the files are rendered by ansible-playbook (the ``rendered`` fixture) and
checked by nats-server itself."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROLES_DIR, ROUTES, SOME_UPDATE_TYPES, FakeSecrets, Rendered, load_yaml, tool
from telegram_gateway.bus import INBOX_PREFIX
from telegram_gateway.idempotency import IDEMPOTENCY_BUCKET
from telegram_gateway.ownership import OWNERS_BUCKET
from telegram_gateway.slots import SUBJECT_PREFIX as SLOTS_PREFIX


def parse_environment_file(text: str) -> dict[str, str]:
    """The subset of systemd's EnvironmentFile= syntax the roles write: KEY="value" with
    backslash escapes of " \\ ` $ inside the double quotes (systemd's SHELL_NEED_ESCAPE)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', line)
        assert match, f'not a KEY="value" line: {line!r}'
        raw, value, i = match.group(2), [], 0
        while i < len(raw):
            if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in '"\\`$':
                value.append(raw[i + 1])
                i += 2
            else:
                value.append(raw[i])
                i += 1
        values[match.group(1)] = "".join(value)
    return values


@pytest.mark.integration
def test_nats_config_is_valid_for_nats_server(rendered: Rendered) -> None:
    for name in ("nats-server.conf", "nats-server-live.conf"):
        result = subprocess.run(
            [tool("nats-server"), "-t", "-c", str(rendered.path(name))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_nats_config_listens_on_loopback_with_jetstream(rendered: Rendered) -> None:
    conf = rendered.text("nats-server.conf")
    assert re.search(r'^host: "127\.0\.0\.1"$', conf, re.M)
    assert re.search(r"^port: 4222$", conf, re.M)
    assert re.search(r'^http: "127\.0\.0\.1:8222"$', conf, re.M)
    assert re.search(r'store_dir: "/var/lib/nats"', conf)


@pytest.mark.integration
def test_a_single_hosts_nats_config_has_no_cluster(rendered: Rendered) -> None:
    """One host (the default outside a group of several): no cluster block, no route listener,
    no server name; test_nats_cluster.py runs a cluster of three."""
    conf = rendered.text("nats-server.conf")
    assert not re.search(r"^\s*(cluster|server_name|routes)\b", conf, re.M)
    assert "6222" not in conf and "nats-route" not in conf


@pytest.mark.integration
def test_nats_config_keeps_only_bcrypt_hashes(
    rendered: Rendered, fake_secrets: FakeSecrets
) -> None:
    conf = rendered.text("nats-server.conf")
    for secret in fake_secrets.values():
        assert secret not in conf
    hashes = re.findall(r'user: "([^"]+)", password: "(\$2[aby]\$11\$[./A-Za-z0-9]{53})"', conf)
    assert [user for user, _ in hashes] == ["telegram-gateway", "agents"]


@pytest.mark.integration
def test_nats_password_hashes_only_change_with_the_password(rendered: Rendered) -> None:
    """A second run keeps the hashes (0 changed); a new password gets a new hash."""

    def hashes(name: str) -> dict[str, str]:
        return dict(re.findall(r'user: "([^"]+)", password: "([^"]+)"', rendered.text(name)))

    assert re.search(r"Render nats-server\.conf again\] \*+\nok:", rendered.log), rendered.log
    before, after = hashes("nats-server.conf"), hashes("nats-server-rotated.conf")
    assert after["telegram-gateway"] == before["telegram-gateway"]
    assert after["agents"] != before["agents"]


@pytest.mark.integration
def test_bot_api_environment_file(rendered: Rendered, fake_secrets: FakeSecrets) -> None:
    env = parse_environment_file(rendered.text("telegram-bot-api.env"))
    assert env == {
        "TELEGRAM_API_ID": fake_secrets.api_id,
        "TELEGRAM_API_HASH": fake_secrets.api_hash,
        "EMULATOR_BOT_TOKENS": ",".join(fake_secrets.bot_tokens),
    }


@pytest.mark.integration
def test_gateway_environment_file(rendered: Rendered, fake_secrets: FakeSecrets) -> None:
    env = parse_environment_file(rendered.text("telegram-gateway.env"))
    assert env == {
        "TELEGRAM_API_URL": "http://127.0.0.1:8081",
        "TELEGRAM_BOT_TOKENS": ",".join(fake_secrets.bot_tokens),
        "NATS_URL": "nats://127.0.0.1:4222",
        "NATS_USER": "telegram-gateway",
        # quotes, backslash, backtick and dollar survive systemd's unescaping
        "NATS_PASSWORD": fake_secrets.nats_gateway_password,
        "GATEWAY_API_TOKEN": fake_secrets.gateway_api_token,
        "GATEWAY_ROUTES_FILE": "/etc/telegram-gateway/routes.yml",
        "GATEWAY_STATE_DIR": "/var/lib/telegram-gateway",
        "GATEWAY_BIND": "127.0.0.1:8000",
        "GATEWAY_WORKERS": "2",
        "GATEWAY_LOG_LEVEL": "INFO",
        "GATEWAY_ALLOWED_UPDATES": "all",
        "GATEWAY_UPLOAD_CONCURRENCY": "4",
        "GATEWAY_UPLOAD_MAX_BYTES": "4294967296",
        # the outbox the role creates; the Bot API server's --dir (no telegram_bot_api role in
        # this play: the gateway role's own default)
        "GATEWAY_MEDIA_DIRS": "/var/lib/telegram-gateway/outbox",
        "TELEGRAM_API_DIR": "/var/lib/telegram-bot-api",
        "GATEWAY_FILES_MAX_BYTES": "104857600",
        "GATEWAY_FILES_TTL": "86400",
        "GATEWAY_FILES_BUCKET_MAX_BYTES": "1073741824",
        # the state the workers share, in NATS Key-Value buckets
        "GATEWAY_LEASE_TTL": "3",
        "GATEWAY_NATS_REPLICAS": "1",
        "GATEWAY_HOST_NAME": "localhost",
        "GATEWAY_IDEMPOTENCY_TTL": "86400",
        "GATEWAY_IDEMPOTENCY_MAX_BYTES": "67108864",
        "GATEWAY_STREAM_MAX_AGE": "3600",
    }


@pytest.mark.integration
def test_gateway_environment_file_lists_the_allowed_updates(rendered: Rendered) -> None:
    """telegram_gateway_allowed_updates as a list of update types: GATEWAY_ALLOWED_UPDATES is
    that list, comma separated, and the gateway's settings read it back as those types."""
    env = parse_environment_file(rendered.text("telegram-gateway-some-updates.env"))
    assert env["GATEWAY_ALLOWED_UPDATES"] == ",".join(SOME_UPDATE_TYPES)
    default = parse_environment_file(rendered.text("telegram-gateway.env"))
    assert {k: v for k, v in env.items() if k != "GATEWAY_ALLOWED_UPDATES"} == {
        k: v for k, v in default.items() if k != "GATEWAY_ALLOWED_UPDATES"
    }
    config = pytest.importorskip("telegram_gateway.config")
    assert config.load_settings(env).allowed_updates == tuple(SOME_UPDATE_TYPES)
    assert config.load_settings(default).allowed_updates == config.ALL_UPDATE_TYPES


@pytest.mark.unit
def test_gateway_role_knows_the_update_types_of_the_gateway() -> None:
    """The preflight accepts exactly the update types the gateway's settings accept."""
    config = pytest.importorskip("telegram_gateway.config")
    role_vars = load_yaml(ROLES_DIR / "telegram_gateway" / "vars" / "main.yml")
    assert tuple(role_vars["_telegram_gateway_update_types"]) == config.ALL_UPDATE_TYPES
    assert "GATEWAY_ALLOWED_UPDATES" in role_vars["_telegram_gateway_managed_env"]


@pytest.mark.integration
def test_gateway_environment_is_accepted_by_the_gateway_settings(
    rendered: Rendered, tmp_path: Path
) -> None:
    config = pytest.importorskip("telegram_gateway.config")
    env = parse_environment_file(rendered.text("telegram-gateway.env"))
    routes = tmp_path / "routes.yml"
    routes.write_text(rendered.text("routes.yml"))
    env["GATEWAY_ROUTES_FILE"] = str(routes)
    env["GATEWAY_STATE_DIR"] = str(tmp_path)
    settings = config.load_settings(env)
    assert len(settings.bots) == 2
    assert settings.media_dirs == (Path("/var/lib/telegram-gateway/outbox"),)
    assert settings.telegram_api_dir == Path("/var/lib/telegram-bot-api")
    assert (settings.files_max_bytes, settings.files_ttl, settings.files_bucket_max_bytes) == (
        100 * 1024**2,
        86400,
        1024**3,
    )
    routing = pytest.importorskip("telegram_gateway.routing")
    loaded = routing.load_routes(routes, settings.bots)
    assert [route.store_files for route in loaded.routes] == [True, False]


@pytest.mark.integration
def test_routes_file_is_the_routes_variable(rendered: Rendered) -> None:
    assert yaml.safe_load(rendered.text("routes.yml")) == {"routes": ROUTES}


# --- a live nats-server with the rendered configuration ---


@pytest.fixture
def live_nats(rendered: Rendered):
    proc = subprocess.Popen(
        [tool("nats-server"), "-c", str(rendered.live_nats_conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"nats://127.0.0.1:{rendered.live_nats_port}"
    deadline = time.monotonic() + 15
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", rendered.live_nats_port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nats-server did not start: {proc.stderr.read()}")
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def connect_users(
    url: str, secrets: FakeSecrets, errors: list[str], gateway_errors: bool = False
) -> tuple[Any, Any]:
    """The gateway (with its inbox prefix, as it connects) and an agent, as the rendered users.
    The agent's asynchronous errors (permissions violations) go to ``errors``; the gateway's
    too with ``gateway_errors``."""
    import nats

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    gateway = await nats.connect(
        url,
        user="telegram-gateway",
        password=secrets.nats_gateway_password,
        allow_reconnect=False,
        inbox_prefix=INBOX_PREFIX,
        **({"error_cb": on_error} if gateway_errors else {}),
    )
    agents = await nats.connect(
        url,
        user="agents",
        password=secrets.nats_agents_password,
        error_cb=on_error,
        allow_reconnect=False,
    )
    return gateway, agents


async def read_object(js: Any, name: str) -> bytes:
    """An object of TELEGRAM_FILES as the README shows agents reading it: its metadata, then
    each chunk, by direct gets (no consumer)."""
    import base64

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


async def until_violation(errors: list[str]) -> None:
    """The server's -ERR 'Permissions Violation' arrives asynchronously (error_cb): wait for
    it, bounded, rather than a fixed time that a loaded host may miss."""
    for _ in range(100):
        if any("permissions violation" in e.lower() for e in errors):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no permissions violation reported: {errors}")


@pytest.mark.integration
def test_rendered_nats_users_have_the_intended_permissions(
    live_nats: str, fake_secrets: FakeSecrets
) -> None:
    nats = pytest.importorskip("nats")
    from nats.errors import NoRespondersError, TimeoutError
    from nats.js.api import AckPolicy, ConsumerConfig

    async def scenario() -> None:
        errors: list[str] = []
        with pytest.raises(Exception):  # noqa: B017 - any auth failure will do
            await nats.connect(
                live_nats,
                user="telegram-gateway",
                password="wrong",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )
        gateway, agents = await connect_users(live_nats, fake_secrets, errors, gateway_errors=True)
        try:
            # the gateway manages the stream and publishes updates into it
            js = gateway.jetstream()
            await js.add_stream(name="TELEGRAM", subjects=["telegram.in.>"])
            await js.publish("telegram.in.1.message", b"{}", headers={"Nats-Msg-Id": "1:1"})
            # agents read it with a durable pull consumer the gateway creates for them
            # (telegram.consumers.create), bound, fetched and acked
            await js.add_consumer(
                "TELEGRAM",
                ConsumerConfig(durable_name="agent", ack_policy=AckPolicy.EXPLICIT),
            )
            agents_js = agents.jetstream()
            sub = await agents_js.pull_subscribe_bind("agent", stream="TELEGRAM")
            messages = await sub.fetch(1, timeout=5)
            assert messages[0].data == b"{}"
            await messages[0].ack_sync()
            info = await agents_js.consumer_info("TELEGRAM", "agent")
            assert info.num_ack_pending == 0 and info.delivered.stream_seq == 1

            # agents request sends; the gateway answers on telegram.out.>
            async def answer(msg) -> None:
                await msg.respond(b'{"ok":true}')

            await gateway.subscribe("telegram.out.>", queue="telegram-gateway", cb=answer)
            await gateway.flush()
            reply = await agents.request("telegram.out.1.sendMessage", b"{}", timeout=5)
            assert reply.data == b'{"ok":true}'
            # agents must not inject updates nor manage the stream
            errors.clear()
            await agents.publish("telegram.in.1.message", b"forged")
            await agents.flush()
            with pytest.raises((NoRespondersError, TimeoutError, Exception)):
                await agents.request("$JS.API.STREAM.DELETE.TELEGRAM", b"", timeout=2)
            await until_violation(errors)
            info = await js.stream_info("TELEGRAM")
            assert info.state.messages == 1
        finally:
            await agents.close()
            await gateway.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_rendered_nats_users_share_received_files_read_only(
    live_nats: str, fake_secrets: FakeSecrets
) -> None:
    """The gateway stores files in TELEGRAM_FILES and answers telegram.files.>; agents ask
    for a file and read it by direct gets (README: "Receiving files"), and may not put,
    delete, purge, nor read it through a consumer of their own."""
    pytest.importorskip("nats")
    from nats.js.api import ObjectStoreConfig

    async def scenario() -> None:
        errors: list[str] = []
        gateway, agents = await connect_users(live_nats, fake_secrets, errors)
        try:
            store = await gateway.jetstream().create_object_store(
                "TELEGRAM_FILES", ObjectStoreConfig(ttl=3600, max_bytes=10 * 1024**2)
            )
            data = bytes(range(256)) * 2000  # 512,000 bytes: four chunks
            await store.put("AQADfileunique", data)

            async def answer(msg) -> None:
                await msg.respond(b'{"ok":true,"result":{"name":"AQADfileunique"}}')

            await gateway.subscribe("telegram.files.>", queue="telegram-gateway", cb=answer)
            await gateway.flush()
            reply = await agents.request("telegram.files.1.get", b'{"file_id":"x"}', timeout=5)
            assert b"AQADfileunique" in reply.data

            # the documented way: the object's metadata, then its chunks, by direct gets
            assert await read_object(agents.jetstream(), "AQADfileunique") == data

            errors.clear()
            agent_store = await agents.jetstream().object_store("TELEGRAM_FILES")
            with pytest.raises(Exception):  # noqa: B017 - refused: a timeout or an API error
                await asyncio.wait_for(agent_store.put("forged", b"forged"), 5)
            with pytest.raises(Exception):  # noqa: B017
                await asyncio.wait_for(agent_store.delete("AQADfileunique"), 5)
            with pytest.raises(Exception):  # noqa: B017 - nats-py's get: a push consumer
                await asyncio.wait_for(agent_store.get("AQADfileunique"), 5)
            with pytest.raises(Exception):  # noqa: B017
                await agents.request("$JS.API.STREAM.PURGE.OBJ_TELEGRAM_FILES", b"{}", timeout=2)
            await until_violation(errors)
            # untouched: the object is whole and nothing else was stored
            assert (await store.get("AQADfileunique")).data == data
            names = [info.name for info in await store.list()]
            assert names == ["AQADfileunique"]
        finally:
            await agents.close()
            await gateway.close()

    asyncio.run(scenario())


def test_the_gateways_inbox_prefix_is_the_one_the_role_protects() -> None:
    variables = load_yaml(ROLES_DIR / "nats_server" / "vars" / "main.yml")
    assert variables["_nats_server_gateway_inbox_prefix"] == INBOX_PREFIX
    assert INBOX_PREFIX != "_INBOX" and not INBOX_PREFIX.startswith("_INBOX.")


@pytest.mark.integration
def test_agents_can_neither_read_nor_forge_the_gateways_replies(
    live_nats: str, fake_secrets: FakeSecrets
) -> None:
    """The adversarial test of issue #11: an agent subscribed to the gateway's reply inboxes
    (JetStream acks) and flooded forged error acks into them. Both are refused now, and the
    gateway's JetStream publishes keep their acks."""
    pytest.importorskip("nats")

    async def scenario() -> None:
        errors: list[str] = []
        gateway, agents = await connect_users(live_nats, fake_secrets, errors)
        try:
            seen: list[bytes] = []

            async def spy(msg) -> None:
                seen.append(msg.data)

            await agents.subscribe(f"{INBOX_PREFIX}.>", cb=spy)
            await agents.flush()
            await until_violation(errors)
            errors.clear()
            await agents.publish(f"{INBOX_PREFIX}.forged.1", b'{"error":{"code":503}}')
            await agents.flush()
            await until_violation(errors)

            js = gateway.jetstream()
            await js.add_stream(name="TELEGRAM", subjects=["telegram.in.>"])
            inbox = gateway.new_inbox()
            assert inbox.startswith(f"{INBOX_PREFIX}.")
            for index in range(5):
                ack = await js.publish(
                    "telegram.in.1.message", b"{}", headers={"Nats-Msg-Id": f"1:{index + 10}"}
                )
                assert ack.stream == "TELEGRAM"
            await asyncio.sleep(0.2)
            assert seen == []  # the acks went to the gateway only
        finally:
            await agents.close()
            await gateway.close()

    asyncio.run(scenario())


def test_the_gateways_buckets_and_internal_subjects_are_the_ones_the_role_protects() -> None:
    variables = load_yaml(ROLES_DIR / "nats_server" / "vars" / "main.yml")
    assert variables["_nats_server_owners_bucket"] == OWNERS_BUCKET
    assert variables["_nats_server_idempotency_bucket"] == IDEMPOTENCY_BUCKET
    assert SLOTS_PREFIX.split(".")[0] == variables["_nats_server_gateway_internal_prefix"]


@pytest.mark.integration
def test_only_the_gateway_uses_its_leases_idempotency_keys_and_slot_requests(
    live_nats: str, fake_secrets: FakeSecrets
) -> None:
    """The gateway's shared state: it keeps its leases and Idempotency-Keys in Key-Value
    buckets and asks its own workers for send slots. An agent can neither read those buckets
    (a key's answer holds a sent message), nor write a lease (and so stop a bot's polling),
    nor ask for or answer a slot request."""
    pytest.importorskip("nats")
    from nats.js.api import KeyValueConfig

    async def scenario() -> None:
        errors: list[str] = []
        gateway, agents = await connect_users(live_nats, fake_secrets, errors)
        try:
            js = gateway.jetstream()
            owners = await js.create_key_value(KeyValueConfig(bucket=OWNERS_BUCKET, ttl=60))
            keys = await js.create_key_value(KeyValueConfig(bucket=IDEMPOTENCY_BUCKET, ttl=60))
            revision = await owners.create("bots.1", b'{"worker":"host-1"}')
            await owners.update("bots.1", b'{"worker":"host-1"}', last=revision)
            await keys.create("k.abc", b'{"state":"done","body":{"text":"secret"}}')

            async def grant(msg) -> None:
                await msg.respond(b'{"slots":[1.0]}')

            await gateway.subscribe(f"{SLOTS_PREFIX}.host-1", cb=grant)
            await gateway.flush()
            asked = await gateway.request(f"{SLOTS_PREFIX}.host-1", b"{}", timeout=5)
            assert asked.data == b'{"slots":[1.0]}'

            agents_js = agents.jetstream()
            for bucket in (OWNERS_BUCKET, IDEMPOTENCY_BUCKET):
                errors.clear()
                with pytest.raises(Exception):  # noqa: B017 - refused: timeout or API error
                    await asyncio.wait_for(agents_js.key_value(bucket), 5)
                await until_violation(errors)
            errors.clear()
            await agents.publish(f"$KV.{OWNERS_BUCKET}.bots.1", b'{"worker":"agent"}')
            await agents.publish(f"$KV.{IDEMPOTENCY_BUCKET}.k.abc", b"forged")
            await agents.flush()
            await until_violation(errors)
            errors.clear()
            with pytest.raises(Exception):  # noqa: B017
                await agents.request(f"{SLOTS_PREFIX}.host-1", b"{}", timeout=2)
            await until_violation(errors)
            errors.clear()
            await agents.subscribe(f"{SLOTS_PREFIX}.>")
            await agents.flush()
            await until_violation(errors)
            # untouched
            assert (await owners.get("bots.1")).value == b'{"worker":"host-1"}'
            assert b"secret" in ((await keys.get("k.abc")).value or b"")
        finally:
            await agents.close()
            await gateway.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_agents_cannot_create_consumers_that_deliver_anywhere(
    live_nats: str, fake_secrets: FakeSecrets
) -> None:
    """The adversarial test of issue #11: an agent created a push consumer of the stream that
    replayed stored updates onto another agent's subject. Agents create no consumer at all
    now, push or pull, on the stream or the files bucket; they may bind to, fetch from and
    inspect the pull consumers the gateway creates for them."""
    pytest.importorskip("nats")
    import contextlib

    from nats.js.api import ConsumerConfig, ObjectStoreConfig
    from nats.js.errors import BadRequestError

    async def scenario() -> None:
        errors: list[str] = []
        gateway, agents = await connect_users(live_nats, fake_secrets, errors)
        try:
            js = gateway.jetstream()
            # the module's server may have them from an earlier test
            with contextlib.suppress(BadRequestError):
                await js.add_stream(name="TELEGRAM", subjects=["telegram.in.>"])
            with contextlib.suppress(BadRequestError):
                await js.create_object_store("TELEGRAM_FILES", ObjectStoreConfig(ttl=3600))
            await js.publish("telegram.in.1.message", b"{}", headers={"Nats-Msg-Id": "1:99"})
            stored = (await js.stream_info("TELEGRAM")).state.messages
            consumers = {c.name for c in await js.consumers_info("TELEGRAM")}
            agents_js = agents.jetstream()
            for stream, config in (
                ("TELEGRAM", ConsumerConfig(deliver_subject="agents.victim")),
                ("TELEGRAM", ConsumerConfig(deliver_subject="telegram.in.1.message")),
                ("TELEGRAM", ConsumerConfig(durable_name="mine")),
                ("OBJ_TELEGRAM_FILES", ConsumerConfig(deliver_subject="telegram.in.1.message")),
            ):
                errors.clear()
                with pytest.raises(Exception):  # noqa: B017 - refused: timeout or API error
                    await asyncio.wait_for(agents_js.add_consumer(stream, config), 3)
                await until_violation(errors)
            await asyncio.sleep(0.5)  # a window for a consumer that slipped through to deliver
            assert {c.name for c in await js.consumers_info("TELEGRAM")} == consumers
            assert await js.consumers_info("OBJ_TELEGRAM_FILES") == []
            assert (await js.stream_info("TELEGRAM")).state.messages == stored
        finally:
            await agents.close()
            await gateway.close()

    asyncio.run(scenario())
