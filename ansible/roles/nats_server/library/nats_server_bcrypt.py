#!/usr/bin/python
# MIT License (see the repository's README)
"""bcrypt hashes for the users of a nats-server configuration, stable across runs."""

from __future__ import annotations

import hmac
import re
import warnings

from ansible.module_utils.basic import AnsibleModule

try:
    import bcrypt as _bcrypt
except ImportError:  # pragma: no cover - depends on the host
    _bcrypt = None

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt
except ImportError:  # pragma: no cover - Python 3.13 and later
    _crypt = None

DOCUMENTATION = r"""
---
module: nats_server_bcrypt
short_description: bcrypt hashes of nats-server passwords that only change when a password does
description:
  - Returns one bcrypt hash per user for the C(authorization) block of nats-server.conf.
  - When the configuration file at O(path) already holds a hash for a user, the password still
    verifies against it and its cost equals O(cost), that very hash is returned; otherwise a new
    hash with a fresh random salt. A re-run therefore renders the same file (0 changed).
  - Reads O(path) only; never changes anything on the host. Supports check mode.
  - Uses the Python C(bcrypt) package when present, else the C(crypt) module of the standard
    library (Python 3.12 and older; libxcrypt hashes bcrypt).
options:
  path:
    description: nats-server configuration file that may hold earlier hashes (may be missing).
    type: path
    required: true
  users:
    description: User name to clear-text password.
    type: dict
    required: true
  cost:
    description: bcrypt cost factor (log2 of the rounds).
    type: int
    default: 11
"""

RETURN = r"""
hashes:
  description: User name to bcrypt hash.
  type: dict
  returned: success
reused:
  description: Users whose existing hash was kept.
  type: list
  returned: success
"""

_HASH = r"\$2[abxy]\$(?P<cost>[0-9]{2})\$[./A-Za-z0-9]{53}"


def _backend() -> str | None:
    if _bcrypt is not None:
        return "bcrypt"
    if _crypt is not None and getattr(_crypt, "METHOD_BLOWFISH", None) in _crypt.methods:
        return "crypt"
    return None


def _verify(backend: str, password: str, hashed: str) -> bool:
    if backend == "bcrypt":
        return _bcrypt.checkpw(password.encode(), hashed.encode())
    return hmac.compare_digest(_crypt.crypt(password, hashed) or "", hashed)


def _new_hash(backend: str, password: str, cost: int) -> str:
    if backend == "bcrypt":
        return _bcrypt.hashpw(password.encode(), _bcrypt.gensalt(rounds=cost)).decode()
    return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_BLOWFISH, rounds=2**cost))


def existing_hash(config_text: str, user: str) -> tuple[str | None, int | None]:
    """The hash the configuration holds for ``user`` ({user: "<name>", password: "<hash>"})."""
    pattern = (
        r'\{\s*user:\s*"' + re.escape(user) + r'"\s*,\s*password:\s*"(?P<hash>' + _HASH + r')"'
    )
    match = re.search(pattern, config_text)
    return (match.group("hash"), int(match.group("cost"))) if match else (None, None)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            users=dict(type="dict", required=True, no_log=True),
            cost=dict(type="int", default=11),
        ),
        supports_check_mode=True,
    )
    cost = module.params["cost"]
    users = module.params["users"]
    if not 4 <= cost <= 31:
        module.fail_json(msg="nats_server_bcrypt_cost must be between 4 and 31")
    for name, password in users.items():
        if not isinstance(password, str) or not password:
            module.fail_json(msg=f"the NATS password of user {name} is empty")
        if len(password.encode()) > 72:
            module.fail_json(
                msg=f"the NATS password of user {name} is longer than 72 bytes, "
                "which bcrypt cannot hash"
            )

    backend = _backend()
    if backend is None:
        if module.check_mode:
            # nothing to hash with yet (the role installs python3-bcrypt when not in check mode)
            module.warn(
                "no bcrypt implementation on the host; hashes are placeholders in check mode"
            )
            module.exit_json(
                changed=False,
                hashes={u: f"$2b${cost:02d}${'.' * 53}" for u in users},
                reused=[],
            )
        module.fail_json(
            msg="no bcrypt implementation for the host's Python: install python3-bcrypt"
        )

    try:
        with open(module.params["path"], encoding="utf-8") as handle:
            config_text = handle.read()
    except FileNotFoundError:
        config_text = ""
    except OSError as exc:
        module.fail_json(msg=f"cannot read {module.params['path']}: {exc}")

    hashes, reused = {}, []
    for name, password in users.items():
        old, old_cost = existing_hash(config_text, name)
        if old and old_cost == cost and _verify(backend, password, old):
            hashes[name] = old
            reused.append(name)
        else:
            hashes[name] = _new_hash(backend, password, cost)
    module.exit_json(changed=False, hashes=hashes, reused=sorted(reused))


if __name__ == "__main__":
    main()
