"""The gateway under real gunicorn with gevent workers, as systemd runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.ports import free_port, port_free
from harness.procs import alive, children, terminate, wait_until

REPO = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO / "gateway"


class GatewayProcess:
    """``gunicorn -c gateway/gunicorn.conf.py telegram_gateway.wsgi:app`` on a free port.

    ``env`` holds the gateway settings (TELEGRAM_BOT_TOKENS, NATS_URL, ...). The combined
    log goes to ``<state_dir>/gateway.log`` so tests can read it (e.g. for secrets)."""

    def __init__(self, state_dir: Path, env: dict[str, str], workers: int = 2) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.workers = workers
        self.env = dict(env)
        self.log_path = state_dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_healthy: bool = True, timeout: float = 30) -> GatewayProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(GATEWAY_DIR),
            "GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "GATEWAY_WORKERS": str(self.workers),
            "GATEWAY_STATE_DIR": str(self.state_dir),
            # gunicorn's control socket: one per gateway, not one shared in ~/.gunicorn
            "XDG_RUNTIME_DIR": str(self.state_dir),
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(GATEWAY_DIR / "gunicorn.conf.py"),
                "telegram_gateway.wsgi:app",
            ],
            env=env,
            cwd=str(GATEWAY_DIR),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._answers, timeout, f"gateway on port {self.port} to answer")
        if wait_healthy:
            self.wait_healthy(timeout)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited: {self.log()[-3000:]}")
        status, _ = self.get("/healthz")
        return status in (200, 503)

    def wait_healthy(self, timeout: float = 30) -> None:
        last: dict[str, Any] = {}

        def healthy() -> bool:
            nonlocal last
            status, last = self.get("/healthz")
            return status == 200

        try:
            wait_until(healthy, timeout, "gateway /healthz 200", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last body: {last}") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any, dict[str, str]]:
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                status, hdrs = response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, parsed, hdrs

    def get(self, path: str, timeout: float = 5) -> tuple[int, Any]:
        status, body, _ = self.request("GET", path, timeout=timeout)
        return status, body

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return children(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc, timeout=20)
        self.proc = None

    def restart(self) -> GatewayProcess:
        """Stop, wait until every old worker is gone and the port is free, start again."""
        workers = self.worker_pids() if self.proc is not None else []
        self.stop()
        wait_until(
            lambda: not any(alive(pid) for pid in workers) and port_free(self.port),
            15,
            f"the old gateway's workers to exit and port {self.port} to be free",
        )
        return self.start()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
