"""A NATS cluster of three nodes as the nats_server role configures it, run for real.

The role's own ``tasks/configure.yml`` configures six fake hosts on this machine (connection
local): the route TLS files (``cluster_tls.yml``: a CA and the nodes' certificates issued on the
controller into a temporary CA directory, then installed), the configuration (validated by
``nats-server -t`` as on a host) and the unit. The role's ``defaults/`` and ``vars/`` are the
inventory's ``group_vars/all`` (below host variables, as role defaults are); each host's own
settings are host variables: its directories, free ports and a cluster address in 127.0.0.0/8,
which Linux routes to ``lo`` entirely. A stub handler stands in for the role's restart.

The group ``telegram_gateway`` is the cluster (the role's default ``nats_server_cluster_hosts``):
node1-3 on 127.0.0.2-4, three real nats-server processes. Three intruders, each missing one of
the cluster's credentials, try to join it and get no route:

- ``intruder_password``: a certificate of the cluster's CA, a wrong route password;
- ``intruder_ca``: the right password, a certificate of another CA (the operator-supplied files
  mode of the role: the cluster's CA certificate with a key and certificate made here);
- ``intruder_plain``: the right password, no TLS (its configuration without the tls block).

All traffic stays on 127.0.0.x; every process is stopped in the fixtures' teardown.
"""

from __future__ import annotations

import asyncio
import datetime
import grp
import ipaddress
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROLES_DIR, ansible_env, run, tool
from harness.ports import free_port, port_free
from harness.procs import terminate, wait_until
from telegram_gateway.bus import INBOX_PREFIX

pytestmark = pytest.mark.integration

ROLE = ROLES_DIR / "nats_server"
NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3", "node3": "127.0.0.4"}
INTRUDERS = {
    "intruder_password": "127.0.0.5",
    "intruder_ca": "127.0.0.6",
    "intruder_plain": "127.0.0.7",
}
CLUSTER = list(NODES)

PLAYBOOK = [
    {
        "name": "Configure the nodes with the nats_server role's configure tasks",
        "hosts": "all",
        "gather_facts": False,
        "handlers": [
            # the role's handler restarts the systemd unit: here the test starts the servers
            {"name": "Restart nats-server", "ansible.builtin.debug": {"msg": "restart"}},
        ],
        "tasks": [
            {
                "name": "Run the configure phase of the role",
                "ansible.builtin.include_tasks": str(ROLE / "tasks" / "configure.yml"),
            }
        ],
    }
]


@dataclass
class Deployment:
    tmp: Path
    hosts: dict[str, dict[str, Any]]
    ca_dir: Path
    route_password: str
    reports: list[dict[str, Any]]
    outputs: list[str]

    def config(self, host: str) -> Path:
        return Path(self.hosts[host]["nats_server_config_file"])

    def tls_dir(self, host: str) -> Path:
        return self.config(host).parent / "cluster"


def _cluster_port() -> int:
    """A port free on every address of the test (the cluster port is the same on all nodes)."""
    addresses = [*NODES.values(), *INTRUDERS.values()]
    for _ in range(50):
        port = free_port(addresses[0])
        if all(port_free(port, address) for address in addresses):
            return port
    raise RuntimeError("no port free on all of 127.0.0.2-7")


def _foreign_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """A key and a certificate for ``address`` (IP SAN, server and client usage) issued by a
    CA of its own, not the cluster's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder_ca")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_path, cert_path = directory / "foreign.key", directory / "foreign.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _inventory(directory: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    """The hosts, node1-3 as the group telegram_gateway, with the role's defaults and vars as
    group_vars/all."""
    group_vars = directory / "group_vars" / "all"
    group_vars.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROLE / "defaults" / "main.yml", group_vars / "00-defaults.yml")
    shutil.copy(ROLE / "vars" / "main.yml", group_vars / "01-vars.yml")
    inventory = {
        "all": {
            "hosts": hosts,
            "children": {"telegram_gateway": {"hosts": {name: None for name in NODES}}},
        }
    }
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _run_playbook(directory: Path, inventory: Path, *extra: str) -> tuple[dict[str, Any], str]:
    playbook = directory / "configure.yml"
    playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    # configure.yml names its template as the role does: from the playbook's templates/ here
    if not (directory / "templates").exists():
        (directory / "templates").symlink_to(ROLE / "templates")
    result = run(
        [tool("ansible-playbook"), "-i", str(inventory), str(playbook), "--forks", "6", *extra],
        cwd=directory,
        env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"),
        timeout=300,
    )
    output = result.stdout + result.stderr
    start = result.stdout.find("{")
    assert start >= 0, output[-4000:]
    report = json.loads(result.stdout[start:])
    failed = {h: s for h, s in report["stats"].items() if s["failures"] or s["unreachable"]}
    assert not failed, _failures(report) or output[-4000:]
    return report, output


def _failures(report: dict[str, Any]) -> str:
    return "\n".join(
        f"{host}: {task['task']['name']}: {result.get('msg')}"
        for play in report["plays"]
        for task in play["tasks"]
        for host, result in task["hosts"].items()
        if result.get("failed")
    )


def _changed(report: dict[str, Any]) -> list[str]:
    return [
        f"{host}: {task['task']['name']}"
        for play in report["plays"]
        for task in play["tasks"]
        for host, result in task["hosts"].items()
        if result.get("changed")
    ]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    if os.geteuid() != 0:
        pytest.skip("the role installs its files owned by root: run the tests as root")
    tmp = tmp_path_factory.mktemp("cluster")
    route_password = secrets.token_urlsafe(18) + '/$"@:x'  # characters a URL or config escapes
    common = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "role_path": str(ROLE),
        "nats_server_binary_path": tool("nats-server"),
        "nats_server_group": grp.getgrgid(os.getgid()).gr_name,
        "nats_server_gateway_password": secrets.token_urlsafe(24),
        "nats_server_agents_password": secrets.token_urlsafe(24),
        "nats_server_cluster_port": _cluster_port(),
        "nats_server_cluster_network": ["127.0.0.0/8"],
        "nats_server_cluster_password": route_password,
        "nats_server_cluster_ca_dir": str(tmp / "ca"),
        "nats_server_jetstream_max_memory": "64MB",
        "nats_server_jetstream_max_file": "1GB",
    }
    foreign_key, foreign_cert = _foreign_certificate(tmp, INTRUDERS["intruder_ca"])
    hosts: dict[str, dict[str, Any]] = {}
    for name, address in {**NODES, **INTRUDERS}.items():
        base = tmp / "hosts" / name
        (base / "store").mkdir(parents=True)
        hosts[name] = {
            **common,
            "nats_server_config_file": str(base / "etc" / "nats-server.conf"),
            "nats_server_state_dir": str(base / "store"),
            "_nats_server_unit_path": str(base / "nats-server.service"),
            "nats_server_port": free_port(),
            "nats_server_monitor_port": free_port(),
            "nats_server_cluster_address": address,
        }
        if name in INTRUDERS:
            # it tries to join the cluster: its routes go to node1-3
            hosts[name]["nats_server_cluster_hosts"] = [*CLUSTER, name]
    hosts["intruder_password"]["nats_server_cluster_password"] = secrets.token_urlsafe(18)
    hosts["intruder_ca"].update(
        # the cluster's CA certificate (the role creates it earlier in the same run) ...
        nats_server_cluster_tls_ca_src=str(tmp / "ca" / "ca.crt"),
        # ... and a certificate of another CA
        nats_server_cluster_tls_cert_src=str(foreign_cert),
        nats_server_cluster_tls_key_src=str(foreign_key),
    )
    inventory = _inventory(tmp / "inventory", hosts)
    reports, outputs = [], []
    # the second run must change nothing (one host of each TLS mode, to save time)
    for extra in ([], ["--limit", "node1,intruder_ca"]):
        report, output = _run_playbook(tmp, inventory, *extra)
        reports.append(report)
        outputs.append(output)
    deployed = Deployment(tmp, hosts, tmp / "ca", route_password, reports, outputs)
    # the third intruder: the same configuration without TLS
    conf = deployed.config("intruder_plain").read_text()
    plain = re.sub(r"\n  tls \{\n.*?\n  \}\n", "\n", conf, flags=re.S)
    assert plain != conf and "tls" not in plain
    deployed.config("intruder_plain").with_name("plain.conf").write_text(plain)
    return deployed


# --- the running servers ---


class Server:
    def __init__(self, name: str, config: Path, monitor_port: int, port: int) -> None:
        self.name, self.config, self.monitor_port, self.port = name, config, monitor_port, port
        self.log = config.parent / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [tool("nats-server"), "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_until(self.serving, 15, f"{self.name}'s monitoring port")
        return self

    def serving(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        self.get("varz")  # (healthz answers 503 until JetStream has its meta leader)
        return True

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.monitor_port}/{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())

    def peers(self) -> set[str]:
        """Server names at the other end of this server's routes (a route pool per peer)."""
        return {route.get("remote_name") or route["rid"] for route in self.get("routez")["routes"]}

    def stop(self) -> None:
        terminate(self.proc)  # type: ignore[arg-type]


def _server(deployed: Deployment, name: str, config: Path | None = None) -> Server:
    host = deployed.hosts[name]
    return Server(
        name,
        config or deployed.config(name),
        host["nats_server_monitor_port"],
        host["nats_server_port"],
    )


def _meta_ready(server: Server) -> bool:
    meta = server.get("jsz").get("meta_cluster", {})
    replicas = meta.get("replicas") or []
    return (
        bool(meta.get("leader"))
        and meta.get("cluster_size") == 3
        and len(replicas) == 2
        and all(replica.get("current") for replica in replicas)
    )


@pytest.fixture(scope="module")
def cluster(deployment: Deployment) -> Iterator[dict[str, Server]]:
    servers = {name: _server(deployment, name) for name in NODES}
    try:
        for server in servers.values():
            server.start()
        for name, server in servers.items():
            others = set(NODES) - {name}
            wait_until(lambda s=server, o=others: s.peers() == o, 30, f"{name}'s routes")
        wait_until(
            lambda: any(_meta_ready(s) for s in servers.values()),
            60,
            "a JetStream meta leader with the two other nodes current",
        )
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# --- the role's files ---


def test_a_second_run_changes_nothing(deployment: Deployment) -> None:
    first, second = deployment.reports
    assert any("route certificate" in line for line in _changed(first)), _changed(first)
    assert _changed(second) == []


def test_the_ca_and_the_certificates(deployment: Deployment) -> None:
    from cryptography import x509

    ca_dir = deployment.ca_dir
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name, address in {**NODES, "intruder_password": INTRUDERS["intruder_password"]}.items():
        tls = deployment.tls_dir(name)
        assert (tls / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
        assert (tls / "node.key").read_bytes() == (ca_dir / "nodes" / f"{name}.key").read_bytes()
        for file in ("ca.crt", "node.crt", "node.key"):
            info = (tls / file).stat()
            assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0, file
        cert = x509.load_pem_x509_certificate((tls / "node.crt").read_bytes())
        assert cert.issuer == ca.subject
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(address)]
        assert san.get_values_for_type(x509.DNSName) == []
    # the operator's files were installed as given
    assert (deployment.tls_dir("intruder_ca") / "node.crt").read_bytes() == (
        deployment.tmp / "foreign.crt"
    ).read_bytes()


def test_the_configuration_of_a_node(deployment: Deployment) -> None:
    conf = deployment.config("node1").read_text()
    port = deployment.hosts["node1"]["nats_server_cluster_port"]
    assert 'server_name: "node1"' in conf
    assert f'listen: "127.0.0.2:{port}"' in conf
    assert "verify: true" in conf and "no_advertise: true" in conf
    # the clients and the monitoring stay on loopback
    assert re.search(r'^host: "127\.0\.0\.1"$', conf, re.M)
    assert re.search(r'^http: "127\.0\.0\.1:\d+"$', conf, re.M)
    # a bcrypt hash for the route user; the routes to the two other nodes carry the password
    assert re.search(r'password: "\$2b\$11\$[./A-Za-z0-9]{53}"', conf)
    routes = re.findall(r'"nats-route://route:([^@"]+)@([0-9.]+):(\d+)"', conf)
    assert [(address, int(p)) for _, address, p in routes] == [
        ("127.0.0.3", port),
        ("127.0.0.4", port),
    ]
    from urllib.parse import unquote

    assert {unquote(password) for password, _, _ in routes} == {deployment.route_password}
    unit = (deployment.config("node1").parent.parent / "nats-server.service").read_text()
    assert "IPAddressAllow=localhost 127.0.0.0/8" in unit.splitlines()


def test_no_route_password_or_key_is_printed(deployment: Deployment) -> None:
    keys = [key.read_text() for key in deployment.ca_dir.rglob("*.key")]
    assert len(keys) == 1 + len(NODES) + 2  # the CA's, the nodes' and two intruders'
    # a PEM key whole, and its first line (the private part: an EC public key follows it)
    watched = [deployment.route_password, *keys, *(key.splitlines()[1] for key in keys)]
    for output in deployment.outputs:
        for secret in watched:
            assert secret not in output


# --- the running cluster ---


def test_each_node_routes_to_both_others(cluster: dict[str, Server]) -> None:
    for name, server in cluster.items():
        assert server.peers() == set(NODES) - {name}
        assert server.get("routez")["num_routes"] >= 2
        # mutual TLS on the routes
        varz = server.get("varz")["cluster"]
        assert varz["tls_required"] is True and varz["tls_verify"] is True, varz


def test_jetstream_has_a_meta_leader_and_three_peers(cluster: dict[str, Server]) -> None:
    leaders = {s.get("jsz")["meta_cluster"].get("leader") for s in cluster.values()}
    assert len(leaders) == 1 and leaders <= set(NODES), leaders
    for server in cluster.values():
        assert server.get("jsz")["meta_cluster"]["cluster_size"] == 3


def test_a_replicated_stream_written_on_node1_reads_on_node3(
    cluster: dict[str, Server], deployment: Deployment
) -> None:
    nats = pytest.importorskip("nats")
    password = deployment.hosts["node1"]["nats_server_gateway_password"]

    async def scenario() -> None:
        async def connect(server: Server) -> Any:
            return await nats.connect(
                f"nats://127.0.0.1:{server.port}",
                user="telegram-gateway",
                password=password,
                allow_reconnect=False,
                connect_timeout=5,
                inbox_prefix=INBOX_PREFIX,  # as the gateway connects (its user's inboxes)
            )

        first, third = await connect(cluster["node1"]), await connect(cluster["node3"])
        try:
            js = first.jetstream(timeout=10)
            await js.add_stream(name="TELEGRAM", subjects=["telegram.in.>"], num_replicas=3)
            for number in range(5):
                await js.publish(
                    "telegram.in.1.message",
                    json.dumps({"update_id": number}).encode(),
                    headers={"Nats-Msg-Id": f"1:{number}"},
                )
            js3 = third.jetstream(timeout=10)
            info = await js3.stream_info("TELEGRAM")
            assert info.config.num_replicas == 3
            assert info.state.messages == 5
            assert len(info.cluster.replicas) == 2
            messages = [await js3.get_msg("TELEGRAM", seq) for seq in range(1, 6)]
            assert [json.loads(m.data)["update_id"] for m in messages] == list(range(5))
        finally:
            await first.close()
            await third.close()

    asyncio.run(scenario())
    # every node keeps a replica
    for server in cluster.values():
        wait_until(lambda s=server: s.get("jsz")["streams"] == 1, 15, f"{server.name}'s replica")


# what the nodes log when they refuse each intruder
REFUSALS = {
    "intruder_password": 'authentication error - User "route"',
    # Go's TLS client sends no certificate that the server's CA list does not name
    "intruder_ca": "TLS route handshake error: tls: (client didn't provide a certificate|.*certif)",
    "intruder_plain": "TLS route handshake error: tls: first record does not look like a TLS",
}


@pytest.mark.parametrize("intruder", INTRUDERS)
def test_a_node_without_the_clusters_credentials_gets_no_route(
    cluster: dict[str, Server], deployment: Deployment, intruder: str
) -> None:
    config = deployment.config(intruder)
    if intruder == "intruder_plain":
        config = config.with_name("plain.conf")
    port = deployment.hosts[intruder]["nats_server_cluster_port"]
    logged = {name: node.log.stat().st_size for name, node in cluster.items()}
    server = _server(deployment, intruder, config).start()

    def closed() -> list[int]:
        """How many of the intruder's routes to each node were closed."""
        log = server.log.read_text()
        return [
            len(re.findall(rf"{re.escape(a)}:{port} - rid:\d+ - Router connection closed", log))
            for a in NODES.values()
        ]

    try:
        wait_until(lambda: min(closed()) > 0, 30, f"every node to close {intruder}'s routes")
        # it tries again (about once a second): wait until every node refused it once more
        first = closed()
        wait_until(
            lambda: all(now > then for now, then in zip(closed(), first, strict=True)),
            30,
            f"every node to refuse {intruder}'s next attempt",
        )
        # between two attempts it holds no route (an attempt shows until the node refuses it;
        # a route that got in would stay)
        wait_until(lambda: server.get("routez")["num_routes"] == 0, 10, f"{intruder}: no route")
        for name, node in cluster.items():
            assert node.peers() == set(NODES) - {name}
            assert node.get("jsz")["meta_cluster"]["cluster_size"] == 3
            with node.log.open() as log:
                log.seek(logged[name])
                assert re.search(REFUSALS[intruder], log.read()), f"{name} did not refuse it"
    finally:
        server.stop()


def test_the_route_password_is_not_in_the_logs_or_the_monitoring(
    cluster: dict[str, Server], deployment: Deployment
) -> None:
    password = deployment.route_password
    from urllib.parse import quote

    for server in cluster.values():
        for path in ("varz", "routez"):
            text = json.dumps(server.get(path))
            assert password not in text and quote(password, safe="") not in text, path
        log = server.log.read_text()
        assert password not in log and quote(password, safe="") not in log


# --- a new address: a new certificate, the same CA ---


def test_a_new_cluster_address_gets_a_new_certificate_from_the_same_ca(
    deployment: Deployment, tmp_path: Path
) -> None:
    from cryptography import x509

    ca_dir = tmp_path / "ca"
    shutil.copytree(deployment.ca_dir, ca_dir)
    before = {path.name: path.read_bytes() for path in ca_dir.rglob("*") if path.is_file()}
    hosts = {name: dict(settings) for name, settings in deployment.hosts.items()}
    for name in NODES:
        hosts[name]["nats_server_cluster_ca_dir"] = str(ca_dir)
    base = tmp_path / "node1"
    hosts["node1"].update(
        nats_server_cluster_address="node1.cluster.test",
        nats_server_config_file=str(base / "etc" / "nats-server.conf"),
        _nats_server_unit_path=str(base / "nats-server.service"),
    )
    inventory = _inventory(tmp_path / "inventory", hosts)
    report, output = _run_playbook(tmp_path, inventory, "--limit", "node1")
    changed = _changed(report)
    assert "node1: Issue the node's route certificate from the cluster CA on the controller" in (
        changed
    ), changed
    after = {path.name: path.read_bytes() for path in ca_dir.rglob("*") if path.is_file()}
    # the CA and the node's key stay; the signing request and the certificate follow the address
    assert {name for name in before if before[name] != after[name]} == {"node1.csr", "node1.crt"}
    cert = x509.load_pem_x509_certificate(after["node1.crt"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1.cluster.test"]
    assert san.get_values_for_type(x509.IPAddress) == []
    assert (base / "etc" / "cluster" / "node.crt").read_bytes() == after["node1.crt"]
    assert 'listen: "node1.cluster.test:' in (base / "etc" / "nats-server.conf").read_text()
    assert deployment.route_password not in output
