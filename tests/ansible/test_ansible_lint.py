"""Static checks of the Ansible content: linters, syntax, argument specs, the example inventory."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import ANSIBLE_DIR, REPO, ROLES, ROLES_DIR, ansible_env, load_yaml, run, tool

# unit: reads the files only; integration: runs a tool (yamllint, ansible-lint, ansible-playbook,
# ansible-inventory)


# the roles and playbook, and the Molecule scenario (its own files, linted the same way)
LINT_TARGETS = {
    "roles": ["ansible/site.yml", "ansible/roles"],
    "molecule": ["ansible/molecule"],
}


@pytest.mark.integration
@pytest.mark.parametrize("target", LINT_TARGETS)
def test_yamllint_is_clean(target: str) -> None:
    paths = [p for p in LINT_TARGETS[target] if (REPO / p).exists()]
    if not paths:
        pytest.skip(f"nothing to lint for {target}")
    if target == "roles":
        paths += [".ansible-lint", ".yamllint"]
    result = run([tool("yamllint"), "--strict", *paths])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def ansible_lint() -> tuple[int, str]:
    """One ansible-lint run over ansible/ (.ansible-lint at the repository root: profile
    production); each target below checks its own files in the result."""
    result = run(
        [tool("ansible-lint"), "--offline", "--nocolor", "ansible"],
        env=ansible_env(ANSIBLE_ROLES_PATH=str(ROLES_DIR)),
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("target", LINT_TARGETS)
def test_ansible_lint_production_profile_is_clean(
    ansible_lint: tuple[int, str], target: str
) -> None:
    returncode, output = ansible_lint
    # 0: clean, 2: violations found; anything else: ansible-lint itself failed
    assert returncode in (0, 2), output[-6000:]
    assert "Profile 'production' was required" in output, output[-2000:]
    located = re.findall(r"^(ansible/\S+?):\d+", output, re.M)
    mine = [path for path in located if path.startswith(tuple(LINT_TARGETS[target]))]
    assert not mine, output[-6000:]
    if target == "roles":
        # the roles and the playbook were linted at all
        assert returncode == 0 or located, output[-2000:]


@pytest.mark.integration
def test_site_playbook_passes_syntax_check_with_the_example_inventory() -> None:
    result = run(
        [
            tool("ansible-playbook"),
            "--syntax-check",
            "ansible/site.yml",
            "-i",
            "inventory.example",
        ]
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # the inventory really parsed (a broken one only warns and falls back to localhost)
    assert "Unable to parse" not in output and "No inventory was parsed" not in output, output


@pytest.mark.unit
def test_site_playbook_applies_the_roles_in_dependency_order() -> None:
    plays = load_yaml(ANSIBLE_DIR / "site.yml")
    assert isinstance(plays, list) and len(plays) == 1
    play = plays[0]
    assert play["hosts"] == "telegram_gateway"
    assert play["become"] is True
    assert [entry["role"] for entry in play["roles"]] == list(ROLES)


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_document_exactly_the_defaults(role: str) -> None:
    defaults = load_yaml(ROLES_DIR / role / "defaults" / "main.yml")
    specs = load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults), (
        f"only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in argument_specs: {sorted(set(options) - set(defaults))}"
    )
    for name, spec in options.items():
        assert spec.get("description"), f"{name}: no description"
        assert spec.get("type") in {"str", "int", "bool", "list", "dict", "path", "raw"}, name
        assert spec.get("default") == defaults[name], f"{name}: default differs from defaults/"
        assert name.startswith(role + "_"), f"{name}: operator variables start with {role}_"


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES)
def test_role_layout_and_variable_naming(role: str) -> None:
    base = ROLES_DIR / role
    for part in (
        "defaults/main.yml",
        "vars/main.yml",
        "meta/main.yml",
        "meta/argument_specs.yml",
        "handlers/main.yml",
        "tasks/main.yml",
        "tasks/preflight.yml",
        "tasks/install.yml",
        "tasks/configure.yml",
        "README.md",
    ):
        assert (base / part).is_file(), f"{role}: missing {part}"
    internal = load_yaml(base / "vars" / "main.yml")
    assert all(name.startswith(f"_{role}_") for name in internal), sorted(internal)
    registered = set()
    for path in (base / "tasks").glob("*.yml"):
        registered |= set(re.findall(r"^\s*register:\s*(\S+)", path.read_text(), re.M))
    assert registered, f"{role}: no registered results?"
    assert all(name.startswith(f"__{role}_") for name in registered), sorted(registered)


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES)
def test_main_only_orchestrates_tagged_phases(role: str) -> None:
    tasks = load_yaml(ROLES_DIR / role / "tasks" / "main.yml")
    imported = [
        t["ansible.builtin.import_tasks"] for t in tasks if "ansible.builtin.import_tasks" in t
    ]
    assert imported == ["preflight.yml", "install.yml", "configure.yml"]
    allowed = {f"{role}_install", f"{role}_configure", f"{role}_run"}
    for task in tasks:
        assert task.get("tags"), f"untagged task in {role}/tasks/main.yml: {task.get('name')}"
        assert set(task["tags"]) <= allowed, task["tags"]


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES)
def test_every_command_declares_when_it_changes_something(role: str) -> None:
    for path in (ROLES_DIR / role / "tasks").glob("*.yml"):
        for task in load_yaml(path) or []:
            for inner in task.get("block", [task]):
                if {"ansible.builtin.command", "ansible.builtin.shell"} & set(inner):
                    args = inner.get("ansible.builtin.command") or inner.get(
                        "ansible.builtin.shell"
                    )
                    assert "changed_when" in inner or "creates" in args, (path, inner["name"])


# what a `when:` that restates a file's wanted state looks like: a rendered template or file
# hashed, a checksum, owner, group or mode compared, a find of what is installed
FILE_STATE = re.compile(r"lookup\(|hash\(|checksum|\.mode\b|pw_name|gr_name|_installed\b")


@pytest.mark.unit
@pytest.mark.parametrize("role", ROLES)
def test_no_task_is_skipped_by_restating_a_files_state(role: str) -> None:
    """template, copy, file and synchronize report their changes themselves: no condition
    compares what a file should be with what it is (one changed mode would skip it forever)."""
    for path in (ROLES_DIR / role / "tasks").glob("*.yml"):
        for task in load_yaml(path) or []:
            for inner in task.get("block", [task]):
                when = json.dumps(inner.get("when", ""))
                assert not FILE_STATE.search(when), (path.name, inner["name"], when)
    assert not (ROLES_DIR / role / "library").exists(), f"{role}: no custom modules"


# Variables an operator must set (the roles refuse to run without them) and the inventory
# shows with a placeholder; secrets come from ansible-vault.
REQUIRED = {
    "telegram_bot_api_binary_src": False,
    "telegram_bot_api_api_id": True,
    "telegram_bot_api_api_hash": True,
    "nats_server_gateway_password": True,
    "nats_server_agents_password": True,
    "telegram_gateway_bot_tokens": True,
    "telegram_gateway_api_token": True,
    "telegram_gateway_nats_password": True,
}


@pytest.mark.integration
def test_example_inventory_shows_every_required_variable_and_takes_secrets_from_the_vault() -> None:
    result = run([tool("ansible-inventory"), "-i", "inventory.example", "--list"])
    assert result.returncode == 0, result.stderr
    inventory = json.loads(result.stdout)
    assert inventory["telegram_gateway"]["hosts"], "no host in group telegram_gateway"
    hostvars = inventory["_meta"]["hostvars"]
    host_vars = next(iter(hostvars.values()))
    for name, secret in REQUIRED.items():
        assert name in host_vars, f"inventory.example does not show {name}"
        if secret:
            assert re.search(r"\{\{ vault_\w+ \}\}", json.dumps(host_vars[name])), (
                f"{name} must reference an ansible-vault variable"
            )
    text = (REPO / "inventory.example").read_text().splitlines()
    for name in REQUIRED:
        index = next(i for i, line in enumerate(text) if line.startswith(name + "="))
        block = []
        while index > 0 and text[index - 1].strip():
            index -= 1
            block.append(text[index])
        assert any(line.startswith("#") for line in block), f"{name}: no comment above it"
    # the example routes are valid rules for the gateway's routes file format
    routes = host_vars["telegram_gateway_routes"]
    assert all({"name", "subjects"} <= set(rule) for rule in routes)
    # the gateway's NATS credentials are the nats_server gateway user's
    assert host_vars["telegram_gateway_nats_password"] == host_vars["nats_server_gateway_password"]


@pytest.mark.unit
def test_ansible_cfg_points_at_the_roles() -> None:
    text = (ANSIBLE_DIR / "ansible.cfg").read_text()
    assert re.search(r"^roles_path\s*=\s*\./roles\s*$", text, re.M), text


@pytest.mark.unit
def test_readmes_follow_the_role_readme_format() -> None:
    for role in ROLES:
        text = (ROLES_DIR / role / "README.md").read_text()
        headings = re.findall(r"^## (.+)$", text, re.M)
        assert headings[:5] == [
            "Requirements",
            "Role Variables",
            "Dependencies",
            "Example Playbook",
            "License",
        ], (role, headings)
        defaults = yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text())
        missing = [name for name in defaults if name not in text]
        assert not missing, f"{role}/README.md does not describe {missing}"
    readme = (ANSIBLE_DIR.parent / "README.md").read_text()
    guide = readme.split("# Deploying with Ansible", 1)[1]
    for needle in (
        "ansible-vault",
        "logOut",
        "systemctl status",
        "curl -s 127.0.0.1:8000/healthz",
        "journalctl -u",
        "--check --diff",
    ):
        assert needle in guide, f"README.md's deployment guide does not mention {needle}"
