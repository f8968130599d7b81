"""The service: listeners, faults that take the API listener down, signals, start-up."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import socket
import sys
import tempfile
import time

from botapi_emulator import received
from botapi_emulator.cli import Options
from botapi_emulator.constants import (
    API_VERSION,
    EMULATOR_VERSION,
    JOURNAL_NAME,
    RESTART_DESCRIPTION,
)
from botapi_emulator.control import ControlApi
from botapi_emulator.emulator import Emulator
from botapi_emulator.httpserver import HttpConnection
from botapi_emulator.logs import log
from botapi_emulator.persistence import Journal, restore, snapshot
from botapi_emulator.protocol import Handled, Request, Response, control_error, error_response
from botapi_emulator.stats import stats_page
from botapi_emulator.tokens import TokenError


def is_loopback(host: str) -> bool:
    if host.startswith("::ffff:"):
        host = host[7:]
    return host.startswith("127.") or host == "::1" or host == "localhost"


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Service:
    """The listeners and the process life cycle around one ``Emulator``."""

    def __init__(self, opts: Options, emu: Emulator) -> None:
        self.opts = opts
        self.emu = emu
        self.control = ControlApi(emu)
        self.connections: set[HttpConnection] = set()
        self.api_server: asyncio.AbstractServer | None = None
        self.other_servers: list[asyncio.AbstractServer] = []
        self.stopping = False
        self.stop_event = asyncio.Event()
        self.down_until = 0.0
        self.up_timer: asyncio.TimerHandle | None = None
        self.relisten_task: asyncio.Future[None] | None = None
        emu.on_down = self.go_down
        emu.on_up = self.come_up

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self._serve_api(bind_socket(self.opts.http_ip_address, self.opts.http_port))
        if self.opts.http_stat_port:
            sock = bind_socket(self.opts.http_stat_ip_address, self.opts.http_stat_port)
            self.other_servers.append(
                await loop.create_server(lambda: HttpConnection(self, "stat"), sock=sock)
            )
        if self.opts.control_port:
            sock = bind_socket("127.0.0.1", self.opts.control_port)
            self.other_servers.append(
                await loop.create_server(lambda: HttpConnection(self, "control"), sock=sock)
            )
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)

    async def _serve_api(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.api_server = await loop.create_server(lambda: HttpConnection(self, "api"), sock=sock)

    def handle(self, req: Request, conn: HttpConnection) -> Handled:
        if conn.kind == "stat":
            active = sum(1 for c in self.connections if c.current is not None)
            text = stats_page(self.emu, active)
            return Response(200, text.encode(), content_type="text/plain; charset=utf-8")
        if conn.kind == "control":
            return self.control.handle(req)
        if req.path == "/_emulator" or req.path.startswith("/_emulator/"):
            if not is_loopback(conn.peer):
                return control_error("the control API answers loopback clients only", 403)
            return self.control.handle(req)
        if not req.path.startswith("/"):
            return self.emu.counted(
                error_response(404, "Not Found: absolute URI is specified in the Request-Line")
            )
        return self.emu.handle_api(req)

    def flush_journal(self) -> None:
        if self.emu.journal is not None:
            self.emu.journal.flush()

    # faults: the API listener goes down and comes back ---------------------------------
    def go_down(self, duration: float) -> None:
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        self.down_until = max(self.down_until, time.monotonic() + duration)
        if self.api_server is not None:
            self.api_server.close()
            self.api_server = None
            log.warning("fault: API listener down for %.3f s", duration)
        for conn in list(self.connections):
            if conn.kind != "api":
                continue
            if conn.current is not None and conn.current.path.startswith("/_emulator"):
                conn.close_after_answer = True  # the control request that took it down
            else:
                conn.shutdown(None)
        if self.up_timer is not None:
            self.up_timer.cancel()
        self.up_timer = loop.call_later(
            max(self.down_until - time.monotonic(), 0.0), self._up_when_due
        )

    def _up_when_due(self) -> None:
        self.up_timer = None
        if time.monotonic() + 0.001 >= self.down_until:
            self.come_up()

    def come_up(self) -> None:
        self.emu.faults = [f for f in self.emu.faults if f.mode != "down"]
        self.down_until = 0.0
        if self.up_timer is not None:
            self.up_timer.cancel()
            self.up_timer = None
        if self.api_server is not None or self.stopping:
            return
        try:
            sock = bind_socket(self.opts.http_ip_address, self.opts.http_port)
        except OSError as exc:
            log.error("fault: cannot listen again on the API port (%s); retrying", exc)
            asyncio.get_running_loop().call_later(0.2, self.come_up)
            return
        self.relisten_task = asyncio.ensure_future(self._serve_api(sock))
        log.warning("fault: API listener up again")

    # stopping ---------------------------------------------------------------------------
    def request_stop(self, signum: int) -> None:
        if self.stopping:
            log.warning("Receive stop signal again. Exit immediately...")
            self.flush_journal()
            os._exit(0)
        log.warning(
            "Stopping engine with uptime %.3f seconds by a signal (%s)",
            time.time() - self.emu.started,
            signal.Signals(signum).name,
        )
        self.stop_event.set()

    async def shutdown(self) -> None:
        """Answer pending requests 500 "Internal Server Error: restart", then close."""
        self.stopping = True
        if self.api_server is not None:
            self.api_server.close()
        for server in self.other_servers:
            server.close()
        restart = error_response(500, RESTART_DESCRIPTION)
        for conn in list(self.connections):
            conn.shutdown(restart if conn.kind == "api" else None)
        if self.emu.journal is not None:
            self.emu.journal.close()
        deadline = time.monotonic() + 2.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        log.warning("--------------------FINISH ENGINE--------------------")


def reopen_log_files() -> None:
    """SIGUSR1 (after an external log rotation): reopen the log file."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()


class StartupError(Exception):
    """Printed with the usage text; exit code 1 (like the real server's init errors)."""


def _check_writable(directory: str, message: str) -> None:
    try:
        fd, path = tempfile.mkstemp(dir=directory)
        os.close(fd)
        os.unlink(path)
    except OSError:
        raise StartupError(message) from None


def _change_user(username: str, groupname: str) -> None:
    import grp
    import pwd

    try:
        user = pwd.getpwnam(username)
        gid = grp.getgrnam(groupname).gr_gid if groupname else user.pw_gid
    except KeyError as exc:
        raise StartupError(f"Can't change effective user: unknown {exc}") from None
    if os.geteuid() == user.pw_uid and os.getegid() == gid:
        return
    try:
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(user.pw_uid)
    except OSError as exc:
        raise StartupError(f"Can't change effective user: {exc}") from None


def prepare_environment(opts: Options) -> tuple[str, str]:
    """Descriptor limit, user switch, working/temp directories, log path (as the real one)."""
    if opts.max_connections:
        import resource

        try:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            wanted = opts.max_connections
            new_hard = hard if hard == resource.RLIM_INFINITY or wanted <= hard else wanted
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
        except (OSError, ValueError) as exc:
            raise StartupError(f"Can't set file descriptor limit: {exc}") from None
    if opts.username:
        _change_user(opts.username, opts.groupname)
    workdir = os.path.realpath(opts.dir or ".")
    try:
        os.makedirs(workdir, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"Failed to create working directory: {exc}") from None
    _check_writable(
        workdir,
        f'Can\'t create files in the directory "{workdir}/". '
        "Use --dir option to specify a writable working directory",
    )
    temp_dir = opts.temp_dir
    if temp_dir:
        temp_dir = temp_dir if os.path.isabs(temp_dir) else os.path.join(workdir, temp_dir)
        try:
            os.makedirs(temp_dir, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"Can't set temporary directory: {exc}") from None
    else:
        temp_dir = tempfile.gettempdir()
    _check_writable(
        temp_dir,
        f'Can\'t create files in the directory "{temp_dir}". '
        "Use --temp-dir option to specify another directory for temporary files",
    )
    if opts.log and not os.path.isabs(opts.log):
        opts.log = os.path.join(workdir, opts.log)
    return workdir, temp_dir


def start_tokens(opts: Options, env: dict[str, str]) -> list[str]:
    from_env = [t.strip() for t in env.get("EMULATOR_BOT_TOKENS", "").split(",") if t.strip()]
    return opts.bots + from_env


def load_state(emu: Emulator, journal: Journal) -> None:
    started = time.monotonic()
    applied = restore(emu, journal.read_lines())
    journal.rewrite(snapshot(emu))
    journal.open()
    pending = sum(bot.pending_count for bot in emu.bots.values())
    log.warning(
        "Loaded %d journal records (%d bots, %d pending updates) in %.3f seconds",
        applied,
        len(emu.bots),
        pending,
        time.monotonic() - started,
    )


async def serve(opts: Options, workdir: str, temp_dir: str, tokens: list[str]) -> int:
    journal = Journal(os.path.join(workdir, JOURNAL_NAME))
    emu = Emulator(opts, temp_dir, journal)
    emu.allow_colon_in_filenames = received.colon_allowed(workdir)
    load_state(emu, journal)
    for token in tokens:
        try:
            emu.register_bot(token)
        except TokenError as exc:
            log.critical("invalid bot token in --bot/EMULATOR_BOT_TOKENS: %s", exc.description)
            journal.close()
            return 1
    journal.flush()
    service = Service(opts, emu)
    try:
        await service.start()
    except OSError as exc:
        log.critical("Can't listen: %s", exc)
        sys.stderr.write(f"Can't listen: {exc}\n")
        journal.close()
        return 1
    log.warning(
        "Bot API %s server started (emulator %s) on %s:%d%s%s",
        API_VERSION,
        EMULATOR_VERSION,
        opts.http_ip_address,
        opts.http_port,
        f", control API on 127.0.0.1:{opts.control_port}" if opts.control_port else "",
        ", local mode" if opts.local else "",
    )
    await service.stop_event.wait()
    await service.shutdown()
    return 0
