"""The Bot API emulator as a test process, and a small client for it.

``EmulatorProcess`` starts the package ``tests/botapi_emulator`` (``python -m
botapi_emulator`` with ``tests/`` on ``PYTHONPATH``) on free loopback ports
(API and control listener), waits until it answers, and stops it at the end::

    with EmulatorProcess(tmp_path) as emu:
        token = fake_token(123456)
        emu.register_bot(token)
        emu.inject(123456, [{"message": {...}}])
        status, body, headers = emu.call(token, "getUpdates", timeout=0)

The control API is reached on the separate ``--control-port`` listener (``control_url``);
``api_url`` is what a Bot API client (the gateway) is given as ``TELEGRAM_API_URL``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.ports import free_port
from harness.tokens import fake_token

TESTS_DIR = Path(__file__).resolve().parents[1]
EMULATOR_PACKAGE = TESTS_DIR / "botapi_emulator"
EMULATOR_COMMAND = (sys.executable, "-m", "botapi_emulator")
FAKE_API_ID = "12345"
FAKE_API_HASH = "emulator-fake-api-hash"


def emulator_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``tests/`` first on ``PYTHONPATH``, so ``python -m botapi_emulator`` runs."""
    env = dict(base)
    paths = [str(TESTS_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class EmulatorError(RuntimeError):
    """The control API answered ``{"ok": false, "error": ...}``."""


class EmulatorProcess:
    """The emulator as a subprocess; a context manager that always stops it."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        local: bool = True,
        bots: Iterable[str] = (),
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        verbosity: int = 3,
        stat_port: bool = False,
        program: Iterable[str] = EMULATOR_COMMAND,
    ) -> None:
        self.dir = Path(state_dir)
        self.program = list(program)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir = self.dir / "temp"
        self.local = local
        self.start_tokens = list(bots)
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.verbosity = verbosity
        self.port = free_port()
        self.control_port = free_port()
        self.stat_port = free_port() if stat_port else 0
        self.log_path = self.dir / "emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # urls ---------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        """The --control-port listener (paths with or without the /_emulator prefix)."""
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def stat_url(self) -> str:
        return f"http://127.0.0.1:{self.stat_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # life cycle ---------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            *self.program,
            f"--http-port={self.port}",
            "--http-ip-address=127.0.0.1",
            f"--control-port={self.control_port}",
            f"--dir={self.dir}",
            f"--temp-dir={self.temp_dir}",
            f"--verbosity={self.verbosity}",
        ]
        if self.local:
            cmd.append("--local")
        if self.stat_port:
            cmd += [f"--http-stat-port={self.stat_port}", "--http-stat-ip-address=127.0.0.1"]
        for token in self.start_tokens:
            cmd += ["--bot", token]
        return cmd + self.extra_args

    def start(self, timeout: float = 15.0) -> EmulatorProcess:
        env = emulator_env(os.environ)
        env.setdefault("TELEGRAM_API_ID", FAKE_API_ID)
        env.setdefault("TELEGRAM_API_HASH", FAKE_API_HASH)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if self.control("GET", "/ping", timeout=1.0).get("ok"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"emulator not ready after {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL on timeout; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, *, kill: bool = False) -> EmulatorProcess:
        """Stop (or kill -9) and start again with the same ports and directory."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # control API ----------------------------------------------------------------------
    def control(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """One control API call (``path`` like ``/stats`` or ``/_emulator/stats``); the
        whole JSON envelope (``ok``/``result``/``error``)."""
        path = "/" + path.lstrip("/")
        if not path.startswith("/_emulator/"):
            path = "/_emulator" + path
        url = self.control_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return _http_json(method, url, json, timeout)

    def _result(
        self,
        http_method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        envelope = self.control(http_method, path, body, query=query)
        if not envelope.get("ok"):
            raise EmulatorError(f"{http_method} {path}: {envelope.get('error')}")
        return envelope["result"]

    def register_bot(
        self, token: str, first_name: str | None = None, username: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"token": token}
        if first_name:
            body["first_name"] = first_name
        if username:
            body["username"] = username
        return self._result("POST", "/bots", body)

    def bots(self) -> list[dict[str, Any]]:
        return self._result("GET", "/bots")

    def add_chat(self, bot_id: int, chat_id: int, type: str | None = None, **fields: Any) -> dict:
        """Register (or update) one chat: title, username, first_name, blocked, …"""
        spec: dict[str, Any] = {"id": chat_id, **fields}
        if type:
            spec["type"] = type
        return self.add_chats(bot_id, [spec])[0]

    def add_chats(self, bot_id: int, chats: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._result("POST", "/chats", {"bot_id": bot_id, "chats": chats})

    def chats(self, bot_id: int) -> list[dict[str, Any]]:
        return self._result("GET", "/chats", query={"bot_id": bot_id})

    def inject(self, bot_id: int, updates: list[dict[str, Any]]) -> dict[str, Any]:
        return self._result("POST", "/updates", {"bot_id": bot_id, "updates": updates})

    def inject_file(
        self,
        token: str,
        kind: str,
        data: bytes,
        chat_id: int,
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> dict[str, Any]:
        """Inject an update whose message carries a received ``kind`` (photo, voice, document,
        video, audio) holding ``data``: ``{"update_id", "message_id", "file_id",
        "file_unique_id", "file_size", "message"}``. ``getFile`` then downloads it into the
        bot's directory as the real server does (tests/emulator/README.md)."""
        body: dict[str, Any] = {
            "bot_id": int(token.partition(":")[0]),
            "kind": kind,
            "data": base64.b64encode(data).decode("ascii"),
            "chat_id": chat_id,
            "file_name": file_name,
            "mime_type": mime_type,
        }
        return self._result("POST", "/files", body)

    def bot_dir(self, token: str) -> Path:
        """The bot's directory in the real server's layout: ``<dir>/<bot id>:<secret>``, or
        ``<bot id>~<secret>`` where the file system refuses a colon (the emulator probes it
        at start-up as telegram-bot-api does and says so in ``/ping``)."""
        ping = self._result("GET", "/ping")
        name = token if ping["allow_colon_in_filenames"] else token.replace(":", "~")
        return Path(ping["dir"]) / name

    def generate(
        self, bot_id: int, count: int, kinds: Iterable[str] = ("message",), **options: Any
    ) -> dict[str, Any]:
        """Generated updates; options: chat_ids, commands, unknown_field_ratio, seed."""
        spec = {"count": count, "kinds": list(kinds), **options}
        return self._result("POST", "/updates", {"bot_id": bot_id, "generate": spec})

    def updates(self, bot_id: int, since: int | None = None) -> dict[str, Any]:
        """Every update injected for the bot (raw, as served) plus the pending count."""
        return self._result("GET", "/updates", query={"bot_id": bot_id, "since": since})

    def sent(
        self,
        bot_id: int,
        chat_id: int | None = None,
        since: int | None = None,
        method: str | None = None,
    ) -> list[dict[str, Any]]:
        query = {"bot_id": bot_id, "chat_id": chat_id, "since": since, "method": method}
        return self._result("GET", "/sent", query=query)

    def stats(self) -> dict[str, Any]:
        return self._result("GET", "/stats")

    def fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """Inject a fault: error|delay|drop|down; options as in the control API."""
        return self._result("POST", "/faults", {"mode": mode, **options})

    def faults(self) -> list[dict[str, Any]]:
        return self._result("GET", "/faults")

    def clear_faults(self) -> dict[str, Any]:
        return self._result("DELETE", "/faults")

    def set_limits(self, **limits: Any) -> dict[str, Any]:
        """enabled, per_bot_per_second, private_chat_per_second, private_chat_burst, …"""
        return self._result("POST", "/limits", limits)

    def limits(self) -> dict[str, Any]:
        return self._result("GET", "/limits")

    def reset(self, bots: bool = False) -> dict[str, Any]:
        return self._result("POST", "/reset", {"bots": bots})

    # Bot API ----------------------------------------------------------------------------
    def call(
        self, token: str, method: str, *, http_timeout: float = 70.0, **params: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A Bot API call with a JSON body: (HTTP status, JSON envelope, headers).

        ``params`` are the method's parameters (``timeout`` too, for getUpdates);
        ``http_timeout`` bounds the HTTP request itself."""
        url = f"{self.api_url}/bot{token}/{method}"
        data = json.dumps(params).encode()
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        return _open(request, http_timeout)


def _http_json(method: str, url: str, body: Any, timeout: float) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    _, envelope, _ = _open(request, timeout)
    return envelope


def _open(
    request: urllib.request.Request, timeout: float
) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = {"ok": False, "raw": raw.decode(errors="replace")}
        return error.code, envelope, dict(error.headers)


class BotHandle:
    """A bot registered on an emulator, with shortcuts to call the Bot API as it."""

    def __init__(self, emu: EmulatorProcess, bot_id: int, token: str) -> None:
        self.emu = emu
        self.id = bot_id
        self.token = token

    def __repr__(self) -> str:
        return f"BotHandle(id={self.id})"

    @classmethod
    def register(cls, emu: EmulatorProcess, bot_id: int | None = None) -> BotHandle:
        bot_id = bot_id or secrets.randbelow(9_000_000_000) + 10_000_000
        token = fake_token(bot_id)
        emu.register_bot(token)
        return cls(emu, bot_id, token)

    def call(
        self, method: str, *, http_timeout: float = 70.0, **params: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.emu.call(self.token, method, http_timeout=http_timeout, **params)

    def ok(self, method: str, **params: Any) -> Any:
        """The ``result`` of a call that must succeed."""
        status, body, _ = self.call(method, **params)
        assert status == 200 and body.get("ok") is True, (method, status, body)
        return body["result"]

    def error(self, method: str, **params: Any) -> tuple[int, str, dict[str, Any]]:
        """(status, description, envelope + ``headers``) of a call that must fail."""
        status, body, headers = self.call(method, **params)
        assert body.get("ok") is False and body.get("error_code") == status, body
        return status, body["description"], {**body, "headers": headers}

    def chat(self, chat_id: int, type: str | None = None, **fields: Any) -> dict[str, Any]:
        return self.emu.add_chat(self.id, chat_id, type, **fields)

    def inject(self, updates: list[dict[str, Any]]) -> dict[str, Any]:
        return self.emu.inject(self.id, updates)

    def sent(self, **filters: Any) -> list[dict[str, Any]]:
        return self.emu.sent(self.id, **filters)


def private_message(chat_id: int, text: str, message_id: int = 1) -> dict[str, Any]:
    """An Update body (no update_id) with a private text message from user ``chat_id``."""
    user = {"id": chat_id, "is_bot": False, "first_name": "Tester"}
    return {
        "message": {
            "message_id": message_id,
            "from": user,
            "chat": {"id": chat_id, "first_name": "Tester", "type": "private"},
            "date": 1700000000,
            "text": text,
        }
    }


def raw_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request over http.client: (status, headers, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def encode_multipart(
    fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type; files: name -> (filename, data, type)."""
    boundary = "----emulator" + secrets.token_hex(12)
    chunks: list[bytes] = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        chunks.append(f"--{boundary}\r\n{disposition}\r\n\r\n".encode() + value.encode())
        chunks.append(b"\r\n")
    for name, (filename, data, content_type) in files.items():
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
        head = f"--{boundary}\r\n{disposition}\r\nContent-Type: {content_type}\r\n\r\n"
        chunks.append(head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
