"""The roles run for real by ansible-playbook against this machine (connection local), in
``--check --diff`` mode, one fake host per case; a module makes each look like a Debian 12 host
with systemd (the facts the preflight asserts), nothing is gathered or changed.

- **Preflight** (``include_role`` with ``tasks_from: preflight.yml``): valid settings pass,
  every invalid one fails before any change with a message that names the variable to set,
  and a rejected secret is never shown.
- **The emulator is not a server**: the Bot API emulator, packed as the zipapp the Molecule
  scenario builds, is refused as telegram_bot_api_binary_src (a script) unless the test-only
  telegram_bot_api_allow_script_binary says so.
- **Check mode on a fresh host** (whole ``tasks/main.yml`` of nats_server and
  telegram_bot_api: preflight, install, configure, handlers, service): succeeds, reports the
  changes it would make, prints no secret and changes nothing on this machine. The
  nats-server release comes from a ``file://`` URL (a tarball made here), so the controller
  side of the URL mode (download, checksum, unpack) runs for real — twice: the second time it
  changes nothing. (telegram_gateway installs apt packages and a virtualenv, which needs a real
  Debian host; Molecule dry-runs it on fresh hosts, converges it and dry-runs it again, in
  Debian 12 and 13 systemd containers.)

All cases run in one ansible-playbook invocation to keep this tier fast.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import stat
import sys
import tarfile
import zipapp
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, ROLES_DIR, ansible_env, fake_bot_token, install_fake_facts, run, tool

pytestmark = pytest.mark.integration

PLAYBOOK = [
    {
        "name": "One role per host",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Pretend to be a Debian 12 host with systemd",
                "fake_facts": {},
                "tags": ["always"],
            },
            # two tasks, not one with a templated tasks_from: hosts that include the same role
            # from one task share the first host's tasks_from
            {
                "name": "Run the preflight of the role",
                "ansible.builtin.include_role": {
                    "name": "{{ case_role }}",
                    "tasks_from": "preflight.yml",
                },
                "when": "case_tasks == 'preflight.yml'",
                "tags": ["always"],
            },
            {
                "name": "Run the whole role",
                "ansible.builtin.include_role": {"name": "{{ case_role }}"},
                "when": "case_tasks == 'main.yml'",
                "tags": ["always"],
            },
        ],
    }
]
# what check mode must leave alone on this machine
TOUCHED = [
    Path("/etc/nats-server"),
    Path("/etc/telegram-bot-api"),
    Path("/etc/systemd/system/nats-server.service"),
    Path("/etc/systemd/system/telegram-bot-api.service"),
    Path("/etc/systemd/system/telegram-bot-api-restart.timer"),
    Path("/usr/local/bin/nats-server"),
    Path("/usr/local/bin/telegram-bot-api"),
]


def _valid(role: str) -> dict[str, Any]:
    if role == "nats_server":
        return {
            "nats_server_gateway_password": secrets.token_urlsafe(24),
            "nats_server_agents_password": secrets.token_urlsafe(24),
            "nats_server_binary_src": str(Path(sys.executable).resolve()),
        }
    if role == "telegram_bot_api":
        return {
            "telegram_bot_api_api_id": 12345,
            "telegram_bot_api_api_hash": secrets.token_hex(16),
            "telegram_bot_api_binary_src": str(Path(sys.executable).resolve()),
        }
    return {
        "telegram_gateway_bot_tokens": [fake_bot_token()],
        "telegram_gateway_api_token": secrets.token_urlsafe(24),
        "telegram_gateway_nats_password": secrets.token_urlsafe(24),
        "telegram_gateway_src_dir": str(REPO / "gateway"),
        "telegram_gateway_requirements_file": str(REPO / "requirements.txt"),
    }


# replaced by the path of the emulator zipapp that the `runs` fixture builds
EMULATOR_ZIPAPP = "<emulator zipapp>"
BAD_TOKEN = f"{secrets.randbelow(10**9) + 1}:{secrets.token_urlsafe(8)}"  # secret too short
HIDDEN_HASH = secrets.token_hex(15) + "zz"  # 32 characters, not hexadecimal

# A NATS cluster of the case's host (THIS_HOST, replaced by the case's name) and two peers:
# hosts of the inventory that run no role, with a cluster address each (and one without).
THIS_HOST = "<this host>"
CLUSTER_PEERS = {
    "cluster_peer_b": "10.20.0.12",
    "cluster_peer_c": "10.20.0.13",
    "cluster_peer_d": "10.20.0.14",
    "cluster_peer_without_address": "",
}
# JetStream stores the `runs` fixture lays out (and removes) under /var/lib, where the role
# wants nats_server_state_dir: one of a single server (streams, no meta group), one of a node
# that already runs in a cluster (the same streams and the meta group)
STORES = Path("/var/lib") / f"tgw-tests-{secrets.token_hex(4)}"
STORE_LAYOUTS = {
    "single": ["$G/streams/TELEGRAM/msgs", "$G/streams/KV_TELEGRAM_OWNERS/msgs"],
    "clustered": ["$G/streams/TELEGRAM/msgs", "$SYS/_js_/_meta_/msgs"],
}
ROUTE_PASSWORD = secrets.token_urlsafe(24)
SHORT_ROUTE_PASSWORD = secrets.token_urlsafe(9)  # 12 characters: refused, never shown


def _cluster(**changes: Any) -> dict[str, Any]:
    """Valid settings of a node of a three-node cluster, with ``changes``."""
    return {
        "nats_server_cluster_hosts": [THIS_HOST, "cluster_peer_b", "cluster_peer_c"],
        "nats_server_cluster_address": "10.20.0.11",
        "nats_server_cluster_network": ["10.20.0.0/24"],
        "nats_server_cluster_password": ROUTE_PASSWORD,
        **changes,
    }


# case: (role, changes to the valid settings, text the failure must contain or None = passes)
CASES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "nats_ok": ("nats_server", {}, None),
    "nats_no_password": (
        "nats_server",
        {"nats_server_gateway_password": ""},
        "nats_server_gateway_password",
    ),
    "nats_public_host": ("nats_server", {"nats_server_host": "0.0.0.0"}, "nats_server_host"),
    "nats_short_lame_duck": (
        "nats_server",
        {"nats_server_lame_duck_duration": 5},
        "nats_server_lame_duck_duration",
    ),
    "nats_missing_binary": (
        "nats_server",
        {"nats_server_binary_src": "/nonexistent/nats-server"},
        "nats_server_binary_src",
    ),
    "nats_cluster_ok": ("nats_server", _cluster(), None),
    "nats_cluster_node_with_a_dns_name": (
        "nats_server",
        _cluster(nats_server_cluster_address="nats1.cluster.internal"),
        None,
    ),
    "nats_cluster_of_two": (
        "nats_server",
        _cluster(nats_server_cluster_hosts=[THIS_HOST, "cluster_peer_b"]),
        "nats_server_cluster_hosts",
    ),
    "nats_cluster_without_this_host": (
        "nats_server",
        _cluster(nats_server_cluster_hosts=["cluster_peer_b", "cluster_peer_c", "cluster_peer_d"]),
        "nats_server_cluster_hosts",
    ),
    "nats_cluster_of_unknown_hosts": (
        "nats_server",
        _cluster(nats_server_cluster_hosts=[THIS_HOST, "cluster_peer_b", "nats9.example.org"]),
        "nats9.example.org",
    ),
    "nats_cluster_without_an_address": (
        "nats_server",
        _cluster(nats_server_cluster_address=""),
        "nats_server_cluster_address",
    ),
    "nats_cluster_on_every_address": (
        "nats_server",
        _cluster(nats_server_cluster_address="0.0.0.0"),
        "nats_server_cluster_address",
    ),
    "nats_cluster_peer_without_an_address": (
        "nats_server",
        _cluster(
            nats_server_cluster_hosts=[THIS_HOST, "cluster_peer_b", "cluster_peer_without_address"]
        ),
        "peer cluster_peer_without_address has no nats_server_cluster_address",
    ),
    "nats_cluster_two_nodes_one_address": (
        "nats_server",
        _cluster(nats_server_cluster_address="10.20.0.12"),
        "the same nats_server_cluster_address",
    ),
    "nats_cluster_without_a_password": (
        "nats_server",
        _cluster(nats_server_cluster_password=""),
        "nats_server_cluster_password",
    ),
    "nats_cluster_short_password": (
        "nats_server",
        _cluster(nats_server_cluster_password=SHORT_ROUTE_PASSWORD),
        "nats_server_cluster_password",
    ),
    "nats_cluster_without_a_network": (
        "nats_server",
        _cluster(nats_server_cluster_network=[]),
        "nats_server_cluster_network",
    ),
    "nats_cluster_network_not_a_cidr": (
        "nats_server",
        _cluster(nats_server_cluster_network=["10.20.0.0/33"]),
        "nats_server_cluster_network",
    ),
    "nats_cluster_address_outside_the_network": (
        "nats_server",
        _cluster(nats_server_cluster_network=["10.20.0.0/29"]),
        "outside: 10.20.0.11, 10.20.0.12, 10.20.0.13",
    ),
    "nats_cluster_some_tls_files": (
        "nats_server",
        _cluster(nats_server_cluster_tls_ca_src="/etc/ssl/certs/ca-certificates.crt"),
        "nats_server_cluster_tls_cert_src",
    ),
    "nats_cluster_missing_tls_files": (
        "nats_server",
        _cluster(
            nats_server_cluster_tls_ca_src="/nonexistent/ca.crt",
            nats_server_cluster_tls_cert_src="/nonexistent/node.crt",
            nats_server_cluster_tls_key_src="/nonexistent/node.key",
        ),
        "nats_server_cluster_tls_cert_src",
    ),
    "nats_cluster_over_a_single_servers_store": (
        "nats_server",
        _cluster(nats_server_state_dir=str(STORES / "single")),
        "holds the streams of a single nats-server",
    ),
    "nats_cluster_over_a_clustered_store": (
        "nats_server",
        _cluster(nats_server_state_dir=str(STORES / "clustered")),
        None,
    ),
    "botapi_url_ok": (
        "telegram_bot_api",
        {
            "telegram_bot_api_binary_src": "",
            "telegram_bot_api_binary_url": "https://artifacts.example.org/telegram-bot-api",
            "telegram_bot_api_binary_checksum": "sha256:" + "0" * 64,
        },
        None,
    ),
    "botapi_emulator_refused": (
        "telegram_bot_api",
        {"telegram_bot_api_binary_src": EMULATOR_ZIPAPP},
        "telegram_bot_api_allow_script_binary",
    ),
    "botapi_emulator_allowed_in_tests": (
        "telegram_bot_api",
        {
            "telegram_bot_api_binary_src": EMULATOR_ZIPAPP,
            "telegram_bot_api_allow_script_binary": True,
        },
        None,
    ),
    "botapi_no_binary": (
        "telegram_bot_api",
        {"telegram_bot_api_binary_src": ""},
        "telegram_bot_api_binary_src",
    ),
    "botapi_bad_hash": (
        "telegram_bot_api",
        {"telegram_bot_api_api_hash": HIDDEN_HASH},
        "telegram_bot_api_api_hash",
    ),
    "botapi_public_stats": (
        "telegram_bot_api",
        {
            "telegram_bot_api_http_stat_port": 8082,
            "telegram_bot_api_http_stat_ip_address": "0.0.0.0",
        },
        "telegram_bot_api_http_stat_ip_address",
    ),
    "botapi_username_option": (
        "telegram_bot_api",
        {"telegram_bot_api_extra_args": ["--username=telegram-bot-api"]},
        "--username",
    ),
    "botapi_bad_calendar": (
        "telegram_bot_api",
        {"telegram_bot_api_restart_on_calendar": "every full moon"},
        "telegram_bot_api_restart_on_calendar",
    ),
    "gateway_ok": ("telegram_gateway", {}, None),
    "gateway_bad_token": (
        "telegram_gateway",
        {"telegram_gateway_bot_tokens": [fake_bot_token(), BAD_TOKEN]},
        "entry number 2",
    ),
    "gateway_public_bind": (
        "telegram_gateway",
        {"telegram_gateway_bind_host": "0.0.0.0"},
        "telegram_gateway_bind_host",
    ),
    "gateway_short_api_token": (
        "telegram_gateway",
        {"telegram_gateway_api_token": "short"},
        "telegram_gateway_api_token",
    ),
    "gateway_extra_env_overrides_a_setting": (
        "telegram_gateway",
        {"telegram_gateway_extra_env": {"NATS_URL": "nats://192.0.2.1:4222"}},
        "telegram_gateway_extra_env",
    ),
    "gateway_some_update_types": (
        "telegram_gateway",
        {"telegram_gateway_allowed_updates": ["message", "callback_query", "chat_member"]},
        None,
    ),
    "gateway_unknown_update_type": (
        "telegram_gateway",
        {"telegram_gateway_allowed_updates": ["message", "callback"]},
        "not an update type: callback)",
    ),
    "gateway_all_and_an_update_type": (
        "telegram_gateway",
        {"telegram_gateway_allowed_updates": ["all", "message"]},
        "telegram_gateway_allowed_updates",
    ),
    "gateway_no_update_types": (
        "telegram_gateway",
        {"telegram_gateway_allowed_updates": []},
        "telegram_gateway_allowed_updates",
    ),
    "gateway_media_dirs_outbox_and_srv": (
        "telegram_gateway",
        {
            "telegram_gateway_media_dirs": [
                "/var/lib/telegram-gateway/outbox",
                "/srv/telegram-files",
            ]
        },
        None,
    ),
    "gateway_media_dir_relative": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": ["outbox"]},
        "telegram_gateway_media_dirs",
    ),
    "gateway_media_dir_with_a_colon": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": ["/srv/a:/srv/b"]},
        "telegram_gateway_media_dirs",
    ),
    "gateway_media_dir_root": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": ["/"]},
        "telegram_gateway_media_dirs",
    ),
    "gateway_media_dir_in_tmp": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": ["/tmp/outbox"]},
        "refused: /tmp/outbox",
    ),
    "gateway_media_dir_in_home": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": ["/home/agent/files"]},
        "telegram_gateway_media_dirs",
    ),
    "gateway_media_dir_in_the_state_dir": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": ["/var/lib/telegram-gateway/uploads"]},
        "refused: /var/lib/telegram-gateway/uploads",
    ),
    "gateway_media_dirs_a_string": (
        "telegram_gateway",
        {"telegram_gateway_media_dirs": "/srv/a"},
        "telegram_gateway_media_dirs",
    ),
    "gateway_files_bucket_smaller_than_a_file": (
        "telegram_gateway",
        {
            "telegram_gateway_files_max_bytes": 209715200,
            "telegram_gateway_files_bucket_max_bytes": 104857600,
        },
        "telegram_gateway_files_bucket_max_bytes",
    ),
    "gateway_files_ttl_too_short": (
        "telegram_gateway",
        {"telegram_gateway_files_ttl": 5},
        "telegram_gateway_files_ttl",
    ),
    "gateway_watchdog_too_short": (
        "telegram_gateway",
        {"telegram_gateway_watchdog_sec": 3},
        "telegram_gateway_watchdog_sec",
    ),
    "gateway_lease_ttl_too_short": (
        "telegram_gateway",
        {"telegram_gateway_lease_ttl": 1},
        "telegram_gateway_lease_ttl",
    ),
    "gateway_idempotency_bucket_too_small": (
        "telegram_gateway",
        {"telegram_gateway_idempotency_max_bytes": 1000},
        "telegram_gateway_idempotency_max_bytes",
    ),
    "gateway_api_dir_relative": (
        "telegram_gateway",
        {"telegram_gateway_telegram_api_dir": "var/lib/telegram-bot-api"},
        "telegram_gateway_telegram_api_dir",
    ),
}


def _results(report: dict[str, Any], host: str) -> list[tuple[str, dict[str, Any]]]:
    """(task name without the "<role> : " prefix, result) of every task ``host`` ran."""
    return [
        (task["task"]["name"].split(" : ", 1)[-1], task["hosts"][host])
        for play in report["plays"]
        for task in play["tasks"]
        if host in task["hosts"]
    ]


def _failure(report: dict[str, Any], host: str) -> str | None:
    for _, result in _results(report, host):
        if result.get("failed"):
            return str(result.get("msg", result))
    return None


class Runs:
    def __init__(
        self,
        reports: list[dict[str, Any]],
        outputs: list[str],
        secrets: list[str],
        cluster_ca: Path,
    ):
        self.reports = reports
        self.outputs = outputs
        self.secrets = secrets
        self.cluster_ca = cluster_ca


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    before = {path: path.exists() for path in TOUCHED}
    tmp = tmp_path_factory.mktemp("roles")
    fake_facts_env = install_fake_facts(tmp)
    # a release archive shaped like GitHub's, holding this machine's nats-server
    release = "nats-server-v9.9.9-linux-amd64"
    archive = tmp / f"{release}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tool("nats-server"), arcname=f"{release}/nats-server")
    checksum = hashlib.sha256(archive.read_bytes()).hexdigest()
    # the emulator as the Molecule scenario packs it (.ci/molecule)
    staging = tmp / "zipapp"
    shutil.copytree(
        REPO / "tests" / "botapi_emulator",
        staging / "botapi_emulator",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    emulator = tmp / "botapi-emulator.pyz"
    zipapp.create_archive(
        staging,
        emulator,
        interpreter="/usr/bin/env python3",
        main="botapi_emulator.__main__:main",
    )

    hosts: dict[str, dict[str, Any]] = {}
    for case, (role, changes, _) in CASES.items():
        hosts[case] = {"case_role": role, "case_tasks": "preflight.yml", **_valid(role), **changes}
        if hosts[case].get("telegram_bot_api_binary_src") == EMULATOR_ZIPAPP:
            hosts[case]["telegram_bot_api_binary_src"] = str(emulator)
        if "nats_server_cluster_hosts" in hosts[case]:
            hosts[case]["nats_server_cluster_hosts"] = [
                case if name == THIS_HOST else name
                for name in hosts[case]["nats_server_cluster_hosts"]
            ]
    # the other nodes of the cases' clusters: inventory hosts that run no role
    for name, address in CLUSTER_PEERS.items():
        hosts[name] = {"case_role": "nats_server", "case_tasks": "none"}
        if address:
            hosts[name]["nats_server_cluster_address"] = address
    hosts["check_nats"] = {
        "case_role": "nats_server",
        "case_tasks": "main.yml",
        **_valid("nats_server"),
        "nats_server_binary_src": "",
        "nats_server_binary_url": archive.as_uri(),
        "nats_server_binary_checksum": f"sha256:{checksum}",
        "nats_server_local_cache_path": str(tmp / "cache"),
    }
    # a node of a three-node cluster: the role issues its route certificate from a CA it
    # creates on the controller (for real, like the release cache), the rest is dry-run
    hosts["check_nats_cluster"] = {
        "case_role": "nats_server",
        "case_tasks": "main.yml",
        **_valid("nats_server"),
        **_cluster(nats_server_cluster_hosts=["check_nats_cluster", *list(CLUSTER_PEERS)[:2]]),
        "nats_server_cluster_ca_dir": str(tmp / "cluster-ca"),
    }
    hosts["check_botapi"] = {
        "case_role": "telegram_bot_api",
        "case_tasks": "main.yml",
        **_valid("telegram_bot_api"),
        "telegram_bot_api_restart_on_calendar": "Sun *-*-* 04:00:00",
    }
    for host in hosts.values():
        host.update(ansible_connection="local", ansible_python_interpreter=sys.executable)
    (tmp / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (tmp / "roles.yml").write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))

    command = [tool("ansible-playbook"), "-i", "inventory.yml", "roles.yml", "--check", "--diff"]
    reports, outputs = [], []
    for layout, directories in STORE_LAYOUTS.items():
        for directory in directories:
            (STORES / layout / "jetstream" / directory).mkdir(parents=True)
    try:
        # the second run repeats only the nats-server download and unpacking (install phase)
        for extra in (
            ["--forks", "50"],
            ["--limit", "check_nats", "--tags", "nats_server_install"],
        ):
            result = run(
                command + extra,
                cwd=tmp,
                env=ansible_env(
                    ANSIBLE_ROLES_PATH=str(ROLES_DIR),
                    ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                    **fake_facts_env,
                ),
                timeout=300,
            )
            start = result.stdout.find("{")
            assert start >= 0, result.stdout + result.stderr
            reports.append(json.loads(result.stdout[start:]))
            outputs.append(result.stdout + result.stderr)
    finally:
        shutil.rmtree(STORES)
    assert {path: path.exists() for path in TOUCHED} == before, "check mode changed this machine"
    watched = [BAD_TOKEN, BAD_TOKEN.split(":")[1], HIDDEN_HASH, SHORT_ROUTE_PASSWORD]
    for name in ("check_nats", "check_nats_cluster", "check_botapi"):
        watched += [
            value for key, value in hosts[name].items() if key.endswith(("_password", "_api_hash"))
        ]
    # the route keys the role issued on the controller: whole, and their private first line
    keys = [key.read_text() for key in (tmp / "cluster-ca").rglob("*.key")]
    assert len(keys) == 2, "the CA's key and the node's"
    watched += [*keys, *(key.splitlines()[1] for key in keys)]
    return Runs(reports, outputs, watched, tmp / "cluster-ca")


@pytest.mark.parametrize("case", CASES)
def test_preflight(runs: Runs, case: str) -> None:
    _, _, expected = CASES[case]
    failure = _failure(runs.reports[0], case)
    if expected is None:
        assert failure is None, failure
    else:
        assert failure is not None, f"{case}: preflight passed but should fail naming {expected}"
        assert expected in failure, failure


@pytest.mark.parametrize("host", ["check_nats", "check_botapi"])
def test_check_mode_on_a_fresh_host_succeeds_and_shows_the_changes(runs: Runs, host: str) -> None:
    report = runs.reports[0]
    stats = report["stats"][host]
    assert stats["failures"] == 0 and stats["unreachable"] == 0, _failure(report, host)
    changed = [name for name, result in _results(report, host) if result.get("changed")]
    assert any("systemd unit" in name for name in changed), changed
    assert any("system user" in name for name in changed), changed
    # the handlers and the service tasks skip in check mode instead of failing
    results = dict(_results(report, host))
    role = "nats-server" if host == "check_nats" else "telegram-bot-api"
    assert results[f"Ensure {role} is enabled and running"].get("skipped")
    assert results[f"Restart {role}"].get("skipped")


def test_check_mode_on_a_fresh_cluster_node_shows_its_route_tls_without_secrets(
    runs: Runs,
) -> None:
    """The route certificates are issued on the controller even in check mode (it shows what
    it would copy); the node's key is installed without output, the configuration (its route
    URLs carry the password) without a diff."""
    report = runs.reports[0]
    host = "check_nats_cluster"
    stats = report["stats"][host]
    assert stats["failures"] == 0 and stats["unreachable"] == 0, _failure(report, host)
    results = dict(_results(report, host))
    for name in (
        "Install the route CA and node certificates",
        "Install the node's route key",
        "Write the nats-server configuration (validated by nats-server -t)",
    ):
        assert results[name].get("changed"), name
    assert results["Install the node's route key"].get("censored")
    task = "Write the nats-server configuration (validated by nats-server -t)"
    assert not results[task].get("diff"), "the route password in a diff"
    assert dict(_results(report, "check_nats"))[task].get("diff"), "a single host shows its diff"
    assert stat.S_IMODE((runs.cluster_ca / "ca.key").stat().st_mode) == 0o600
    assert (runs.cluster_ca / "nodes" / "check_nats_cluster.crt").is_file()


def test_url_mode_fetches_and_unpacks_on_the_controller_once(runs: Runs) -> None:
    first, second = (dict(_results(report, "check_nats")) for report in runs.reports)
    download = "Download the nats-server release archive (checksum verified)"
    unpack = "Unpack the nats-server binary from the release archive"
    assert first[download]["changed"] and first[unpack]["changed"]
    assert not second[download]["changed"] and not second[unpack]["changed"]
    assert second["Install the nats-server binary"]["changed"]  # still check mode: not installed


def test_no_secret_is_ever_printed(runs: Runs) -> None:
    for output in runs.outputs:
        for secret in runs.secrets:
            assert secret not in output
