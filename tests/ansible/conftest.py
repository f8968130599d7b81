"""Fixtures for the Ansible content: tool paths, fake secrets and the rendered files.

Templates are rendered by ``ansible-playbook`` itself against localhost, from the roles'
own ``defaults/`` and ``vars/`` files (plus fake inventory settings) and the very template
sources the roles use (the unit
templates through the roles' ``_<role>_unit_template`` variables, the nats-server password
hashes through the role's ``_nats_server_password_hashes``), so what is checked here is what
the roles write on a host. Secrets are fake, generated per run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.tokens import fake_token

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
ROLES_DIR = ANSIBLE_DIR / "roles"
SYSTEMD_DIR = REPO / "systemd"
ROLES = ("nats_server", "telegram_bot_api", "telegram_gateway")
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A tool of this virtualenv (ansible-playbook, ansible-lint, yamllint, nats-server)."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} not found next to {sys.executable}: run `bash .ci/setup`")
    return str(path)


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_HOST_KEY_CHECKING="0",
        # one process per module call instead of a temp file, chmod, run, rm
        ANSIBLE_PIPELINING="1",
        ANSIBLE_LOCAL_TEMP=str(Path(os.environ.get("TMPDIR", "/tmp")) / "ansible-local-tests"),
        # the venv's python, not whatever interpreter discovery finds on the machine
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def run(
    args: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=env or ansible_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# An action plugin (it runs inside ansible-playbook, no module process) that makes the machine
# running the tests look like a Debian 12 host with systemd, the facts the roles' preflight
# asserts, without gathering anything. Install it with install_fake_facts().
FAKE_FACTS_ACTION = """
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result.update(changed=False, ansible_facts={
            "service_mgr": "systemd",
            "systemd": {"version": 252, "features": ""},
            "os_family": "Debian",
            "distribution": "Debian",
            "distribution_version": "12",
            "architecture": "x86_64",
            "python": {"version": {"major": 3, "minor": 11, "micro": 2}},
        })
        return result
"""


def install_fake_facts(directory: Path) -> dict[str, str]:
    """Write the fake_facts action into ``directory``; the environment that enables it."""
    (directory / "action_plugins").mkdir(exist_ok=True)
    (directory / "action_plugins" / "fake_facts.py").write_text(FAKE_FACTS_ACTION)
    return {"ANSIBLE_ACTION_PLUGINS": str(directory / "action_plugins")}


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


def fake_bot_token(bot_id: int | None = None) -> str:
    """A canonical token of the real shape (harness.tokens), for a random bot id by default."""
    return fake_token(bot_id or 1_000_000 + secrets.randbelow(9_000_000_000))


@dataclass(frozen=True)
class FakeSecrets:
    api_id: str
    api_hash: str
    nats_gateway_password: str
    nats_agents_password: str
    gateway_api_token: str
    bot_tokens: tuple[str, ...]

    def values(self) -> list[str]:
        return [
            self.api_hash,
            self.nats_gateway_password,
            self.nats_agents_password,
            self.gateway_api_token,
            *self.bot_tokens,
        ]


@pytest.fixture(scope="session")
def fake_secrets() -> FakeSecrets:
    return FakeSecrets(
        api_id=str(10_000 + secrets.randbelow(90_000_000)),
        api_hash=secrets.token_hex(16),
        # characters that need quoting in an EnvironmentFile, on purpose
        nats_gateway_password=secrets.token_urlsafe(18) + '$"\\`x',
        nats_agents_password=secrets.token_urlsafe(24),
        gateway_api_token=secrets.token_urlsafe(32),
        bot_tokens=(fake_bot_token(), "support=" + fake_bot_token()),
    )


ROUTES = [
    {
        "name": "support",
        "match": {"command": "/help", "update_type": ["message", "edited_message"]},
        "subjects": ["agents.support.inbox"],
        "store_files": True,
    },
    {"name": "everything", "subjects": ["agents.audit.inbox"]},
]


# nats_server_cluster_network of the rendered cluster node's unit
CLUSTER_NETWORK = ["10.20.0.0/24", "fd00:20::/64"]

# telegram_gateway_allowed_updates of a second rendering of the gateway's environment file
SOME_UPDATE_TYPES = ["message", "edited_message", "callback_query"]


@dataclass(frozen=True)
class Rendered:
    """Files rendered by the roles' templates with their defaults (and fake secrets)."""

    dir: Path
    log: str  # ansible-playbook's output
    live_nats_conf: Path
    live_nats_port: int
    live_nats_store: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _render_playbook(
    out: Path, settings: Path, live: dict[str, object], rotated: dict[str, object]
) -> list[dict[str, object]]:
    """One play per role: the role's defaults and vars, then ``settings`` (what an inventory
    would set), its templates rendered into ``out``."""

    def play(role: str, tasks: list[dict[str, object]]) -> dict[str, object]:
        return {
            "name": f"Render the templates of {role}",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"role_path": str(ROLES_DIR / role)},
            "vars_files": [
                str(ROLES_DIR / role / "defaults" / "main.yml"),
                str(ROLES_DIR / role / "vars" / "main.yml"),
                str(settings),
            ],
            "tasks": tasks,
        }

    def template(src: str, dest: str, name: str = "", **task_vars: object) -> dict[str, object]:
        task: dict[str, object] = {
            "name": name or f"Render {dest}",
            "ansible.builtin.template": {"src": src, "dest": f"{out}/{dest}", "mode": "0600"},
        }
        if task_vars:
            task["vars"] = task_vars
        return task

    nats_conf = str(ROLES_DIR / "nats_server" / "templates" / "nats-server.conf.j2")
    bot_templates = str(ROLES_DIR / "telegram_bot_api" / "templates")
    gw_templates = str(ROLES_DIR / "telegram_gateway" / "templates")
    return [
        play(
            "nats_server",
            [
                template(nats_conf, "nats-server.conf"),
                template("{{ _nats_server_unit_template }}", "nats-server.service"),
                # a node of a three-node cluster (tests/ansible/test_nats_cluster.py runs one)
                template(
                    "{{ _nats_server_unit_template }}",
                    "nats-server-cluster.service",
                    nats_server_cluster_hosts=["localhost", "nats2", "nats3"],
                    nats_server_cluster_network=CLUSTER_NETWORK,
                ),
                # a second run must leave the file alone (same hashes)
                template(nats_conf, "nats-server.conf", name="Render nats-server.conf again"),
                # a new agents password: a new hash for that user only
                template(nats_conf, "nats-server-rotated.conf", **rotated),
                # the same template with test ports and store, for a live nats-server
                template(nats_conf, "nats-server-live.conf", **live),
            ],
        ),
        play(
            "telegram_bot_api",
            [
                template(f"{bot_templates}/telegram-bot-api.env.j2", "telegram-bot-api.env"),
                template("{{ _telegram_bot_api_unit_template }}", "telegram-bot-api.service"),
                template(
                    "{{ _telegram_bot_api_restart_unit_template }}",
                    "telegram-bot-api-restart.service",
                ),
                template(
                    "{{ _telegram_bot_api_timer_template }}", "telegram-bot-api-restart.timer"
                ),
                template(
                    "{{ _telegram_bot_api_unit_template }}",
                    "telegram-bot-api-stats.service",
                    telegram_bot_api_http_stat_port=8082,
                    telegram_bot_api_extra_args=["--proxy=http://127.0.0.1:3128", "--filter=0/1"],
                ),
            ],
        ),
        play(
            "telegram_gateway",
            [
                template(f"{gw_templates}/telegram-gateway.env.j2", "telegram-gateway.env"),
                template(
                    f"{gw_templates}/telegram-gateway.env.j2",
                    "telegram-gateway-some-updates.env",
                    telegram_gateway_allowed_updates=SOME_UPDATE_TYPES,
                ),
                template(f"{gw_templates}/routes.yml.j2", "routes.yml"),
                template("{{ _telegram_gateway_unit_template }}", "telegram-gateway.service"),
            ],
        ),
    ]


def render(tmp: Path, settings: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """Run the render playbook with ``settings`` (output in ``tmp/out``)."""
    out = tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(settings)
    live = settings.pop("_live", {})
    rotated = {"nats_server_agents_password": f"{settings['nats_server_agents_password']}-rotated"}
    settings_file = tmp / "settings.json"
    settings_file.write_text(json.dumps(settings))
    playbook = tmp / "render.yml"
    plays = _render_playbook(out, settings_file, live, rotated)
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    return run([tool("ansible-playbook"), "-i", "localhost,", str(playbook)], cwd=tmp)


def render_settings(fake: FakeSecrets, live_port: int, live_store: Path) -> dict[str, object]:
    return {
        "telegram_bot_api_api_id": fake.api_id,
        "telegram_bot_api_api_hash": fake.api_hash,
        "telegram_bot_api_extra_env": {"EMULATOR_BOT_TOKENS": ",".join(fake.bot_tokens)},
        "telegram_bot_api_restart_on_calendar": "Sun *-*-* 04:00:00",
        "nats_server_gateway_password": fake.nats_gateway_password,
        "nats_server_agents_password": fake.nats_agents_password,
        "telegram_gateway_bot_tokens": list(fake.bot_tokens),
        "telegram_gateway_nats_password": fake.nats_gateway_password,
        "telegram_gateway_api_token": fake.gateway_api_token,
        "telegram_gateway_routes": ROUTES,
        "telegram_gateway_extra_env": {"GATEWAY_STREAM_MAX_AGE": "3600"},
        "_live": {
            "nats_server_port": live_port,
            "nats_server_monitor_port": 0,
            "nats_server_state_dir": str(live_store),
        },
    }


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory, fake_secrets: FakeSecrets) -> Rendered:
    tmp = tmp_path_factory.mktemp("render")
    port = _free_port()
    store = tmp / "nats-store"
    store.mkdir()
    result = render(tmp, render_settings(fake_secrets, port, store))
    if result.returncode != 0:
        pytest.fail(f"rendering the templates failed:\n{result.stdout[-4000:]}\n{result.stderr}")
    return Rendered(
        dir=tmp / "out",
        log=result.stdout,
        live_nats_conf=tmp / "out" / "nats-server-live.conf",
        live_nats_port=port,
        live_nats_store=store,
    )
