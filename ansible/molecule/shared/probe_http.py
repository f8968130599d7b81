"""What both scenarios' probes share, copied into each container next to probe.py (the
controller's `verify_support.copy_probe_files`): the loopback addresses, HTTP with the standard
library, and the Bot API emulator's control API, which stands in for Telegram's users.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

BOTAPI = "http://127.0.0.1:8081"
GATEWAY = "http://127.0.0.1:8000"
NATS_URL = "nats://127.0.0.1:4222"
STREAM = "TELEGRAM"


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout=10.0
) -> tuple[int, Any]:
    """(status, the JSON answer or, when it is not JSON, its text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def control(method: str, path: str, body: Any = None) -> Any:
    """The result of the emulator's control API /_emulator/<path>; an error raises."""
    status, answer = http(method, f"{BOTAPI}/_emulator/{path}", body)
    if status != 200 or not isinstance(answer, dict) or not answer.get("ok"):
        raise RuntimeError(f"emulator control {method} {path}: {status} {answer}")
    return answer["result"]


def inject(bot_id: int, count: int) -> list[int]:
    """`count` messages from users to bot_id; their update_ids."""
    res = control(
        "POST", "updates", {"bot_id": bot_id, "generate": {"count": count, "kinds": ["message"]}}
    )
    return list(range(res["first_update_id"], res["last_update_id"] + 1))


def healthz() -> tuple[int, Any]:
    """The gateway's /healthz: (status, body); (0, the error) when nothing answers."""
    try:
        return http("GET", f"{GATEWAY}/healthz", timeout=5)
    except OSError as exc:
        return 0, str(exc)


def main(probes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """`probe.py <name>`: probes["probe_<name>"] with the JSON parameters on stdin; its result
    as JSON on stdout."""
    params = json.load(sys.stdin)
    json.dump(probes[f"probe_{sys.argv[1]}"](params), sys.stdout)
