"""The systemd units as the roles render them: systemd-analyze verify, exposure, hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CLUSTER_NETWORK, ROLES_DIR, SYSTEMD_DIR, FakeSecrets, Rendered

# integration: rendered by ansible-playbook (the `rendered` fixture), checked by systemd-analyze

SERVICES = {
    # long-running service: highest acceptable "Overall exposure level" of systemd-analyze security
    "nats-server.service": 2.0,
    "telegram-bot-api.service": 3.0,
    "telegram-gateway.service": 2.0,
}
# every service unit the roles ship, with its bound (the oneshot restart helper and a cluster
# node's nats-server included)
EXPOSURE = {
    **SERVICES,
    "telegram-bot-api-restart.service": 2.0,
    "nats-server-cluster.service": 2.0,
}
# renderings of a unit template with other settings
VARIANTS = ("-stats", "-cluster")
ALL_UNITS = [
    *EXPOSURE,
    "telegram-bot-api-stats.service",
    "telegram-bot-api-restart.timer",
]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
HARDENING = [
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectProc=invisible",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "Restart=on-failure",
]
# UMask=0077 everywhere but the Bot API server: its group (the gateway) reads the files it
# downloads, see test_gateway_reads_the_files_users_send_and_nothing_more
UMASK = {"telegram-bot-api.service": "UMask=0027"}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(SYSTEMD_ANALYZE).exists():
        pytest.fail("systemd-analyze not found: apt-get install systemd")
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def exec_start(unit_text: str) -> str:
    """The ExecStart command with its continuation lines joined."""
    match = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", unit_text, re.M)
    assert match, "no ExecStart="
    return " ".join(part.strip().rstrip("\\").strip() for part in match.group(1).splitlines())


@pytest.fixture(scope="module")
def verifiable(rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of the rendered units whose ExecStart binary exists on this machine:
    systemd-analyze verify rejects a unit whose binary is missing, and the real ones are
    only on a deployed host. Nothing else is changed."""
    out = tmp_path_factory.mktemp("verify")
    true = shutil.which("true") or "/bin/true"
    for name in ALL_UNITS:
        text = rendered.text(name)
        (out / name).write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={true}", text, flags=re.M))
    return out


@pytest.mark.integration
@pytest.mark.parametrize("unit", ALL_UNITS)
def test_unit_passes_systemd_analyze_verify(verifiable: Path, unit: str) -> None:
    result = analyze("verify", "--man=no", str(verifiable / unit))
    output = result.stdout + result.stderr
    # verify exits 0 even when it ignores an unknown key or section: read its output
    bad = [
        line
        for line in output.splitlines()
        if re.search(r"Unknown key|Unknown section|ignoring|Invalid|Failed to parse", line)
    ]
    assert not bad, output
    assert result.returncode == 0, output


@pytest.mark.integration
@pytest.mark.parametrize(("unit", "bound"), EXPOSURE.items())
def test_unit_exposure_is_within_its_bound(verifiable: Path, unit: str, bound: float) -> None:
    result = analyze("security", "--offline=yes", "--no-pager", str(verifiable / unit))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    exposure = float(match.group(1))
    print(f"{unit}: exposure {exposure}")
    assert exposure <= bound, output


@pytest.mark.integration
@pytest.mark.parametrize("unit", SERVICES)
def test_unit_has_the_hardening_block(rendered: Rendered, unit: str) -> None:
    text = lines(rendered.text(unit))
    expected = [*HARDENING, UMASK.get(unit, "UMask=0077")]
    missing = [directive for directive in expected if directive not in text]
    assert not missing, f"{unit} lacks {missing}"
    # the syscall filter on two lines: on one line systemd drops the ~ part silently
    assert not any(line.startswith("SystemCallFilter=@system-service ") for line in text)
    # off by default (fails in unprivileged containers), a role variable turns it on
    assert "PrivateUsers=yes" not in text
    # systemd drops privileges, never the daemon's own setuid options
    assert not re.search(r"--(username|groupname)\b|\s-[ug]\s", exec_start(rendered.text(unit)))
    assert (
        "User=" + {"nats-server.service": "nats"}.get(unit, unit.removesuffix(".service")) in text
    )


@pytest.mark.integration
@pytest.mark.parametrize("unit", ["nats-server.service", "telegram-gateway.service"])
def test_services_without_egress_are_confined_to_localhost(rendered: Rendered, unit: str) -> None:
    text = lines(rendered.text(unit))
    assert "IPAddressDeny=any" in text and "IPAddressAllow=localhost" in text


@pytest.mark.integration
def test_a_cluster_nodes_nats_unit_also_reaches_the_cluster_network(rendered: Rendered) -> None:
    """With clustering on, nats-server may reach the other nodes (the cluster network) and
    localhost, nothing else; it starts once the network is online (it listens on a private
    address). Otherwise the unit is the single host's."""
    single = rendered.text("nats-server.service").splitlines()
    cluster = rendered.text("nats-server-cluster.service").splitlines()
    allow = [line for line in cluster if line.startswith("IPAddress")]
    assert allow == ["IPAddressDeny=any", "IPAddressAllow=localhost " + " ".join(CLUSTER_NETWORK)]
    assert [line for line in single if line.startswith("IPAddress")] == [
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    ]
    assert "After=network-online.target" in cluster and "Wants=network-online.target" in cluster
    assert "After=network.target" in single and not any("online" in line for line in single)
    changed = {line for line in set(cluster) ^ set(single) if not line.startswith("#")}
    assert {line.split("=", 1)[0] for line in changed} == {
        "Description",
        "After",
        "Wants",
        "IPAddressAllow",
    }, changed


@pytest.mark.integration
def test_bot_api_unit_runs_the_server_on_loopback_without_secrets(
    rendered: Rendered, fake_secrets: FakeSecrets
) -> None:
    text = rendered.text("telegram-bot-api.service")
    command = exec_start(text)
    assert command.split()[0] == "/usr/local/bin/telegram-bot-api"
    for flag in (
        "--local",
        "--http-ip-address=127.0.0.1",
        "--http-port=8081",
        "--dir=/var/lib/telegram-bot-api",
        "--temp-dir=/var/lib/telegram-bot-api/temp",
        "--verbosity=1",
    ):
        assert flag in command.split(), flag
    # the statistics page prints every bot's token: off unless asked for
    assert "--http-stat-port" not in command
    assert "--max-connections" not in command and "LimitNOFILE=" in text
    assert "--api-id" not in command and "--api-hash" not in command
    assert "EnvironmentFile=/etc/telegram-bot-api/telegram-bot-api.env" in lines(text)
    # egress to Telegram is needed; /proc/stat is read every second (see STYLE.md)
    assert "IPAddressDeny=any" not in lines(text)
    assert "ProcSubset=pid" not in lines(text)
    for secret in [fake_secrets.api_id, *fake_secrets.values()]:
        assert secret not in text


@pytest.mark.integration
def test_bot_api_unit_reads_only_the_gateways_outbox_of_the_other_services(
    rendered: Rendered,
) -> None:
    """The server reads local files (file:// in --local mode) as its own user: of the gateway's
    state only the outbox, none of the env files or nats-server's store and config."""
    text = lines(rendered.text("telegram-bot-api.service"))
    for line in (
        "InaccessiblePaths=-/etc/telegram-gateway",
        "InaccessiblePaths=-/var/lib/nats",
        "InaccessiblePaths=-/etc/nats-server",
        "TemporaryFileSystem=/var/lib/telegram-gateway:ro",
        "BindReadOnlyPaths=-/var/lib/telegram-gateway/outbox",
    ):
        assert line in text, line
    # the outbox is the gateway's default GATEWAY_MEDIA_DIRS
    assert 'GATEWAY_MEDIA_DIRS="/var/lib/telegram-gateway/outbox"' in lines(
        rendered.text("telegram-gateway.env")
    )


@pytest.mark.integration
def test_gateway_reads_the_files_users_send_and_nothing_more(rendered: Rendered) -> None:
    """The server's state directory and what tdlib creates in it (folders 0750, files 0640,
    td.binlog 0600) are group-readable, never group-writable; the gateway is in that group
    and in no other of the server's; the server's env file lives elsewhere, root-only."""
    bot_api = lines(rendered.text("telegram-bot-api.service"))
    gateway = lines(rendered.text("telegram-gateway.service"))
    assert "Group=telegram-bot-api" in bot_api
    assert "StateDirectoryMode=0750" in bot_api and "UMask=0027" in bot_api
    assert [line for line in gateway if line.startswith("SupplementaryGroups=")] == [
        "SupplementaryGroups=telegram-bot-api"
    ]
    assert "EnvironmentFile=/etc/telegram-bot-api/telegram-bot-api.env" in bot_api
    assert not any(line.startswith("EnvironmentFile=/var/lib/") for line in bot_api)


@pytest.mark.integration
def test_gateway_unit_has_a_watchdog_fed_by_its_arbiter(rendered: Rendered) -> None:
    text = lines(rendered.text("telegram-gateway.service"))
    assert "Type=notify" in text and "NotifyAccess=main" in text
    assert "WatchdogSec=20s" in text
    assert "Restart=on-failure" in text  # a watchdog timeout is a failure: restarted


@pytest.mark.integration
def test_bot_api_statistics_page_when_enabled_is_loopback_only(rendered: Rendered) -> None:
    command = exec_start(rendered.text("telegram-bot-api-stats.service")).split()
    assert "--http-stat-port=8082" in command
    assert "--http-stat-ip-address=127.0.0.1" in command
    assert "--proxy=http://127.0.0.1:3128" in command and "--filter=0/1" in command


@pytest.mark.integration
def test_scheduled_restart_timer_and_service(rendered: Rendered) -> None:
    timer = lines(rendered.text("telegram-bot-api-restart.timer"))
    assert "OnCalendar=Sun *-*-* 04:00:00" in timer
    service = rendered.text("telegram-bot-api-restart.service")
    assert exec_start(service) == "/bin/systemctl try-restart telegram-bot-api.service"


@pytest.mark.integration
def test_scheduled_restart_service_has_the_hardening_block(rendered: Rendered) -> None:
    """The same block as the services, except what a oneshot that only talks to the service
    manager over its AF_UNIX socket does without: no network at all, no Restart=."""
    text = lines(rendered.text("telegram-bot-api-restart.service"))
    expected = [
        d for d in HARDENING if not d.startswith(("RestrictAddressFamilies=", "Restart="))
    ] + ["RestrictAddressFamilies=AF_UNIX", "PrivateNetwork=yes", "IPAddressDeny=any"]
    missing = [directive for directive in expected if directive not in text]
    assert not missing, f"telegram-bot-api-restart.service lacks {missing}"
    assert "Type=oneshot" in text


@pytest.mark.integration
def test_nats_unit_stops_in_lame_duck_mode_within_its_timeout(rendered: Rendered) -> None:
    text = lines(rendered.text("nats-server.service"))
    assert "KillSignal=SIGUSR2" in text
    conf = rendered.text("nats-server.conf")
    duration = int(re.search(r'lame_duck_duration: "(\d+)s"', conf).group(1))
    grace = int(re.search(r'lame_duck_grace_period: "(\d+)s"', conf).group(1))
    timeout = int(next(line for line in text if line.startswith("TimeoutStopSec=")).split("=")[1])
    assert grace < duration < timeout
    assert duration <= 60, "a restart must not take minutes"
    assert (
        exec_start(rendered.text("nats-server.service"))
        == "/usr/local/bin/nats-server -c /etc/nats-server/nats-server.conf"
    )
    assert "StateDirectory=nats" in text


@pytest.mark.integration
def test_gateway_unit_runs_gunicorn_from_opt(rendered: Rendered) -> None:
    text = lines(rendered.text("telegram-gateway.service"))
    assert (
        "ExecStart=/opt/telegram-gateway/venv/bin/gunicorn -c "
        "/opt/telegram-gateway/gateway/gunicorn.conf.py telegram_gateway.wsgi:app"
    ) in text
    for line in (
        "WorkingDirectory=/opt/telegram-gateway/gateway",
        "Environment=PYTHONPATH=/opt/telegram-gateway/gateway",
        "User=telegram-gateway",
        "StateDirectory=telegram-gateway",
        "EnvironmentFile=/etc/telegram-gateway/telegram-gateway.env",
        "Wants=nats-server.service telegram-bot-api.service",
        "After=network.target nats-server.service telegram-bot-api.service",
    ):
        assert line in text, line


@pytest.mark.unit
def test_units_have_one_source_of_truth() -> None:
    """The roles render systemd/*.j2 of the repository and keep no unit templates of their own."""
    templates = {path.name for path in SYSTEMD_DIR.glob("*.j2")}
    assert templates == {
        f"{unit}.j2" for unit in ALL_UNITS if not any(variant in unit for variant in VARIANTS)
    }
    for role_templates in ROLES_DIR.glob("*/templates"):
        own = [p.name for p in role_templates.iterdir() if re.search(r"\.(service|timer)", p.name)]
        assert not own, f"{role_templates}: unit templates belong in systemd/: {own}"
    uses = {
        "nats_server": ["_nats_server_unit_template"],
        "telegram_bot_api": [
            "_telegram_bot_api_unit_template",
            "_telegram_bot_api_restart_unit_template",
            "_telegram_bot_api_timer_template",
        ],
        "telegram_gateway": ["_telegram_gateway_unit_template"],
    }
    for role, names in uses.items():
        configure = (ROLES_DIR / role / "tasks" / "configure.yml").read_text()
        variables = (ROLES_DIR / role / "vars" / "main.yml").read_text()
        for name in names:
            assert "{{ " + name + " }}" in configure, f"{role} does not render {name}"
            assert re.search(rf"^{name}: .*/systemd/", variables, re.M) or re.search(
                rf"^{name}: .*_systemd_src", variables, re.M
            ), name
