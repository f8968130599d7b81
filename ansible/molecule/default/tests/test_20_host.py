"""The converged host: services, sockets, users, files, secrets and the sandbox in force."""

from __future__ import annotations

import json
import re

import pytest

from conftest import UNITS

USERS = {
    "nats-server.service": "nats",
    "telegram-bot-api.service": "telegram-bot-api",
    "telegram-gateway.service": "telegram-gateway",
}
# exactly these listening sockets on the whole host (the base image itself listens on
# nothing): address -> (socket owner, systemd unit)
LISTENERS = {
    "tcp:127.0.0.1:8081": ("telegram-bot-api", "telegram-bot-api.service"),
    "tcp:127.0.0.1:4222": ("nats", "nats-server.service"),
    "tcp:127.0.0.1:8222": ("nats", "nats-server.service"),
    "tcp:127.0.0.1:8000": ("telegram-gateway", "telegram-gateway.service"),
}
STATE_DIRS = {
    "/var/lib/nats": "nats",
    "/var/lib/telegram-bot-api": "telegram-bot-api",
    "/var/lib/telegram-gateway": "telegram-gateway",
}
ENV_FILES = (
    "/etc/telegram-bot-api/telegram-bot-api.env",
    "/etc/telegram-gateway/telegram-gateway.env",
)
NATS_CONF = "/etc/nats-server/nats-server.conf"
# systemctl show values required of every unit (STYLE.md's hardening block)
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectProc": "invisible",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
}
# the Bot API server's files are group-readable for the gateway (tdlib creates 0750/0640)
UMASK = {"telegram-bot-api.service": {"UMask": "0027"}}
NO_EGRESS = ("nats-server.service", "telegram-gateway.service")
MAX_EXPOSURE = 2.0


def show(host, unit: str, *props: str) -> dict[str, str]:
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines())


def main_pid(host, unit: str) -> int:
    return int(host.check_output(f"systemctl show -p MainPID --value {unit}"))


# --- services ----------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", UNITS)
def test_unit_active_and_enabled(host, unit):
    svc = host.service(unit)
    assert svc.is_running, host.run(f"systemctl status --no-pager {unit}").stdout
    assert svc.is_enabled
    assert show(host, unit, "User")["User"] == USERS[unit]


def test_system_is_running_not_degraded(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state == "running", host.run("systemctl --failed --no-pager").stdout


def test_healthz_reports_everything_ok(host):
    out = host.check_output(
        'python3 -c "import urllib.request as u; '
        "print(u.urlopen('http://127.0.0.1:8000/healthz', timeout=5).read().decode())\""
    )
    body = json.loads(out)
    assert body["status"] == "ok", body
    assert all(check["ok"] for check in body["checks"].values()), body


# --- network -----------------------------------------------------------------------------------
def test_exactly_our_listeners_all_on_loopback(host):
    listeners = {}
    # -e: the socket's owner uid and cgroup (ss -p would need CAP_SYS_PTRACE here)
    for line in host.check_output("ss -Hltune").splitlines():
        fields = line.split()
        uid = re.search(r" uid:(\d+)", line)
        user = host.check_output(f"id -nu {uid.group(1)}") if uid else "root"
        unit = re.search(r"cgroup:\S*/([^/\s]+)", line)
        listeners[f"{fields[0]}:{fields[4]}"] = (user, unit.group(1) if unit else "?")
    assert listeners == LISTENERS


# --- users and files ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(USERS.values())))
def test_service_user_is_a_system_account_without_login(host, name):
    user = host.user(name)
    assert user.exists
    assert user.uid < 1000
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert not set(user.groups) & {"root", "sudo", "adm", "systemd-journal", "docker"}


@pytest.mark.parametrize("path", sorted(STATE_DIRS))
def test_state_directory_private_to_its_service(host, path):
    """Private, except that the Bot API server's group (the gateway) may read the files it
    downloads: 0750, never group-writable."""
    d = host.file(path)
    assert d.is_directory
    assert d.user == STATE_DIRS[path]
    assert d.mode == (0o750 if path == "/var/lib/telegram-bot-api" else 0o700)
    assert d.group == STATE_DIRS[path]


@pytest.mark.parametrize("path", ["/usr/local/bin/nats-server", "/usr/local/bin/telegram-bot-api"])
def test_binaries_root_owned(host, path):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o755)


def test_gateway_code_and_venv_not_writable_by_the_service(host):
    home = host.file("/opt/telegram-gateway")
    assert home.user == "root" and home.mode & 0o022 == 0
    owned = host.check_output("find /opt/telegram-gateway ! -user root")
    writable = host.check_output("find /opt/telegram-gateway ! -type l -perm /022")
    assert owned == "" and writable == ""
    assert host.run("runuser -u telegram-gateway -- test -w /opt/telegram-gateway/gateway").rc != 0


@pytest.mark.parametrize(
    "path", ["/etc/nats-server", "/etc/telegram-bot-api", "/etc/telegram-gateway"]
)
def test_config_directories_root_owned(host, path):
    d = host.file(path)
    assert d.is_directory and d.user == "root" and d.mode & 0o022 == 0, oct(d.mode)


@pytest.mark.parametrize("path", ENV_FILES)
def test_secret_env_files_root_only(host, path):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o600)


@pytest.mark.parametrize("user", sorted(set(USERS.values())))
@pytest.mark.parametrize("path", [*ENV_FILES, NATS_CONF])
def test_service_users_cannot_read_secrets_they_do_not_need(host, user, path):
    may_read = path == NATS_CONF and user == "nats"
    can_read = host.run(f"runuser -u {user} -- test -r {path}").rc == 0
    assert can_read == may_read


def test_nats_config_holds_password_hashes_only(host, secrets):
    conf = host.file(NATS_CONF)
    assert conf.user == "root" and conf.mode & 0o007 == 0
    content = conf.content_string
    for name in ("nats_gateway_password", "nats_agents_password"):
        assert secrets[name] not in content
    assert content.count("$2") >= 2  # bcrypt


def test_plaintext_secrets_only_where_they_belong(host, secrets):
    """Every secret is on disk only in the root-only env files (and the bot token in the
    Bot API server's private state directory, as the real server keeps it)."""
    allowed = set(ENV_FILES)
    for name, value in secrets.items():
        found = host.run(
            f"grep -rlF -e {value!r} /etc /opt /usr/local /var/lib /var/tmp /root /home /run "
            "--exclude-dir=journal"
        ).stdout.split()
        extra = [
            f
            for f in found
            if f not in allowed
            and not (name.startswith("bot_token") and f.startswith("/var/lib/telegram-bot-api/"))
        ]
        assert extra == [], f"{name} found in {extra}"


# --- no secret in argv, unit files, unit properties --------------------------------------------
def test_no_secret_in_ps_output(host, secrets):
    ps = host.check_output("ps -eww -o user,pid,args")
    for name, value in secrets.items():
        assert value not in ps, f"{name} visible in ps"


@pytest.mark.parametrize("unit", UNITS)
def test_no_secret_in_unit_files_or_properties(host, unit, secrets):
    text = host.check_output(f"systemctl cat {unit}") + host.check_output(f"systemctl show {unit}")
    for name, value in secrets.items():
        assert value not in text, f"{name} in the unit or its properties"


# --- sandbox -----------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", UNITS)
def test_hardening_properties(host, unit):
    props = show(host, unit, *HARDENING, "SystemCallFilter", "IPAddressDeny", "PrivateUsers")
    expected = {**HARDENING, **UMASK.get(unit, {})}
    wrong = {
        k: props[k] for k, v in expected.items() if sorted(props[k].split()) != sorted(v.split())
    }
    assert wrong == {}, f"expected { ({k: expected[k] for k in wrong}) }"
    assert props["SystemCallFilter"] != ""
    if unit in NO_EGRESS:
        assert props["IPAddressDeny"] != ""


@pytest.mark.parametrize("unit", UNITS)
def test_sandbox_in_force_on_the_running_process(host, unit):
    pid = main_pid(host, unit)
    status = dict(
        re.split(r":\s*", line, maxsplit=1)
        for line in host.check_output(f"cat /proc/{pid}/status").splitlines()
    )
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # filter mode
    assert status["CapEff"] == status["CapBnd"] == "0000000000000000"
    uid = host.user(USERS[unit]).uid
    assert status["Uid"].split() == [str(uid)] * 4
    # ProtectSystem=strict: / and /usr are read-only in the service's mount namespace
    mounts = host.check_output(f"cat /proc/{pid}/mountinfo").splitlines()
    root = [m.split() for m in mounts if m.split()[4] == "/"]
    assert root and root[-1][5].split(",")[0] == "ro", root


@pytest.mark.parametrize("unit", [*UNITS, "telegram-bot-api-restart.service"])
def test_exposure_score(host, unit):
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"\nEXPOSURE {unit}: {score}")
    assert score <= MAX_EXPOSURE, out
