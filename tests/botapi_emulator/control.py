"""The control API (emulator-only): ``/_emulator/...`` on the ``--control-port``."""

from __future__ import annotations

import json
import json.encoder
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from botapi_emulator import received
from botapi_emulator.bots import BotState
from botapi_emulator.constants import API_VERSION, EMULATOR_VERSION, HTTP_REASONS
from botapi_emulator.encoding import json_bytes
from botapi_emulator.errors import ControlError
from botapi_emulator.faults import DEFAULT_ERROR_DESCRIPTIONS, Fault
from botapi_emulator.generator import UpdateGenerator
from botapi_emulator.logs import log
from botapi_emulator.protocol import Request, Response, control_error, control_response
from botapi_emulator.tokens import TokenError

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


ControlHandler = Callable[[dict[str, str], dict[str, Any]], Any]
FAULT_MODES = ("error", "delay", "drop", "down")


class ControlApi:
    """JSON in, ``{"ok":true,"result":…}`` / ``{"ok":false,"error":…}`` out."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.routes: dict[tuple[str, str], ControlHandler] = {
            ("GET", "/"): self.index,
            ("GET", "/ping"): self.ping,
            ("GET", "/bots"): self.get_bots,
            ("POST", "/bots"): self.post_bots,
            ("GET", "/chats"): self.get_chats,
            ("POST", "/chats"): self.post_chats,
            ("GET", "/updates"): self.get_updates,
            ("POST", "/updates"): self.post_updates,
            ("POST", "/files"): self.post_files,
            ("GET", "/sent"): self.get_sent,
            ("GET", "/stats"): self.get_stats,
            ("GET", "/faults"): self.get_faults,
            ("POST", "/faults"): self.post_faults,
            ("DELETE", "/faults"): self.delete_faults,
            ("GET", "/limits"): self.get_limits,
            ("POST", "/limits"): self.post_limits,
            ("POST", "/reset"): self.post_reset,
            ("POST", "/uptime"): self.post_uptime,
        }

    def handle(self, req: Request) -> Response:
        path = req.path
        if path == "/_emulator" or path.startswith("/_emulator/"):
            path = path[len("/_emulator") :]
        path = "/" + path.strip("/")
        handler = self.routes.get((req.method.upper(), path))
        if handler is None:
            if any(route_path == path for _, route_path in self.routes):
                return control_error(f"method {req.method} not allowed on {path}", 405)
            return control_error(f"no control endpoint {path}", 404)
        try:
            body = self._body(req)
            result = handler(dict(urllib.parse.parse_qsl(req.query)), body)
        except ControlError as exc:
            return control_error(str(exc), exc.status)
        except (ValueError, TypeError, KeyError) as exc:
            return control_error(f"bad request: {type(exc).__name__}: {exc}")
        return result if isinstance(result, Response) else control_response(result)

    @staticmethod
    def _body(req: Request) -> dict[str, Any]:
        if not req.body.strip():
            return {}
        try:
            value = json.loads(req.body)
        except ValueError as exc:
            raise ControlError(f"body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ControlError("body must be a JSON object")
        return value

    def _bot(self, value: Any) -> BotState:
        if value is None or value == "":
            raise ControlError("bot_id is required")
        try:
            bot_id = int(value)
        except (TypeError, ValueError):
            raise ControlError("bot_id must be an integer") from None
        bot = self.emu.bots.get(bot_id)
        if bot is None:
            raise ControlError(f"unknown bot_id {bot_id}", 404)
        return bot

    # endpoints ----------------------------------------------------------------------
    def index(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return sorted(f"{method} /_emulator{path}" for method, path in self.routes)

    def ping(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return {
            "emulator": EMULATOR_VERSION,
            "api_version": API_VERSION,
            "pid": os.getpid(),
            "local": self.emu.opts.local,
            "dir": self.emu.workdir,
            "allow_colon_in_filenames": self.emu.allow_colon_in_filenames,
            "uptime": round(time.time() - self.emu.started, 3),
        }

    def get_bots(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return [
            {**bot.public(), "logged_out": bot.logged_out, "launched": bot.launched_at is not None}
            for bot in self.emu.bots.values()
        ]

    def post_uptime(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        """Pretend the server started ``seconds`` ago (tests of close's 10-minute rule: an
        instance launched now counts as launched that long after the server's start)."""
        seconds = body.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise ControlError("seconds (a number >= 0) is required")
        self.emu.started_monotonic = time.monotonic() - float(seconds)
        return {"uptime": seconds}

    def post_bots(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        token = body.get("token")
        if not isinstance(token, str):
            raise ControlError("token (string) is required")
        try:
            bot = self.emu.register_bot(token, body.get("first_name"), body.get("username"))
        except TokenError as exc:
            raise ControlError(f"invalid token: {exc.description}") from None
        return bot.public()

    def get_chats(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(query.get("bot_id"))
        return [chat.to_record() for chat in bot.chats.values()]

    def post_chats(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(body.get("bot_id"))
        chats = body.get("chats")
        if not isinstance(chats, list) or not all(isinstance(c, dict) for c in chats):
            raise ControlError("chats must be a list of objects")
        return [self.emu.register_chat(bot, spec).to_record() for spec in chats]

    def post_updates(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(body.get("bot_id"))
        if "generate" in body:
            spec = body["generate"]
            if not isinstance(spec, dict):
                raise ControlError("generate must be an object")
            updates: list[Any] = UpdateGenerator(bot, spec).generate()
        else:
            updates = body.get("updates")
            if not isinstance(updates, list):
                raise ControlError("updates must be a list (or use generate)")
        return self.emu.inject(bot, updates)

    def post_files(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        """An update carrying a received file (photo, voice, document, video, audio)."""
        return received.inject_file(self.emu, self._bot(body.get("bot_id")), body)

    def get_updates(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(query.get("bot_id"))
        start = 0
        if query.get("since"):
            start = min(max(int(query["since"]) - bot.base_id, 0), len(bot.history))
        head = {
            "bot_id": bot.id,
            "count": len(bot.history) - start,
            "pending": bot.pending_count,
            "first_pending_update_id": bot.first_pending_id(),
            "next_update_id": bot.next_update_id,
            "confirmed_offset": bot.confirmed_offset,
        }
        prefix = json_bytes(head)[:-1] + b',"updates":['
        body_bytes = b",".join(bot.history[start:])
        return Response(200, b'{"ok":true,"result":' + prefix + body_bytes + b"]}}")

    def get_sent(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        bot = self._bot(query.get("bot_id"))
        records: Iterable[dict[str, Any]] = bot.sent
        if query.get("since"):
            since = int(query["since"])
            records = (r for r in records if r["seq"] > since)
        if query.get("chat_id"):
            chat_id = int(query["chat_id"])
            records = (r for r in records if r["chat_id"] == chat_id)
        if query.get("method"):
            method = query["method"].lower()
            records = (r for r in records if r["method"].lower() == method)
        return list(records)

    def get_stats(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        emu = self.emu
        bots = emu.bots.values()
        return {
            "calls": dict(emu.stats.calls),
            "responses": dict(emu.stats.responses),
            "conflicts_409": emu.stats.conflicts_409,
            "flood_429": emu.stats.flood_429,
            "flood_429_by_limit": dict(emu.stats.flood_by_limit),
            "confirmed_offset": {str(b.id): b.confirmed_offset for b in bots},
            "pending": {str(b.id): b.pending_count for b in bots},
            "next_update_id": {str(b.id): b.next_update_id for b in bots},
            "getupdates_active": {
                str(b.id): b.poller is not None and not b.poller.done() for b in bots
            },
            "sent": {str(b.id): len(b.sent) for b in bots},
            "uptime": round(time.time() - emu.started, 3),
        }

    def get_faults(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        now = time.monotonic()
        return [f.to_dict(now) for f in self.emu.faults if f.active(now)]

    def post_faults(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        fault = self._fault_from(body)
        self.emu.faults.append(fault)
        if fault.mode == "down" and self.emu.on_down is not None:
            # before this answer goes out: a client that has it finds the listener closed
            duration = fault.expires_at - time.monotonic() if fault.expires_at else 3.0
            self.emu.on_down(duration)
        log.info("fault added: %s", fault.to_dict(time.monotonic()))
        return fault.to_dict(time.monotonic())

    def _fault_from(self, body: dict[str, Any]) -> Fault:
        mode = body.get("mode")
        if mode not in FAULT_MODES:
            raise ControlError(f"mode must be one of {list(FAULT_MODES)}")
        methods = body.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise ControlError("methods must be a list of method names")
            methods = frozenset(m.lower() for m in methods)
        count = body.get("count")
        duration = body.get("duration")
        if mode == "down" and duration is None:
            duration = 3.0
        status = int(body.get("status", 500))
        if not 100 <= status <= 599:
            raise ControlError("status must be an HTTP status code")
        retry_after = int(body.get("retry_after", 1))
        description = body.get("description") or (
            f"Too Many Requests: retry after {retry_after}"
            if status == 429
            else DEFAULT_ERROR_DESCRIPTIONS.get(status, HTTP_REASONS.get(status, "Error"))
        )
        self.emu.fault_seq += 1
        return Fault(
            id=self.emu.fault_seq,
            mode=mode,
            methods=methods,
            bot_id=None if body.get("bot_id") is None else int(body["bot_id"]),
            remaining=None if count is None else int(count),
            expires_at=None if duration is None else time.monotonic() + float(duration),
            status=status,
            description=str(description),
            delay=float(body.get("delay", 1.0)),
            retry_after=retry_after,
        )

    def delete_faults(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        cleared = len(self.emu.faults)
        self.emu.clear_faults()
        return {"cleared": cleared}

    def get_limits(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        return self.emu.limits.to_dict()

    def post_limits(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        self.emu.limits.update(body)
        return self.emu.limits.to_dict()

    def post_reset(self, query: dict[str, str], body: dict[str, Any]) -> Any:
        self.emu.reset(bool(body.get("bots", False)))
        return {"bots": [bot.public() for bot in self.emu.bots.values()]}
