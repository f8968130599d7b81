"""``Emulator``: all state and the Bot API dispatch; knows nothing about sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import json.encoder
import logging
import logging.handlers
import os
import random
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from botapi_emulator import received
from botapi_emulator.bots import BotState
from botapi_emulator.chats import CHAT_TYPES, ChatState, chat_type_by_id
from botapi_emulator.cli import Options
from botapi_emulator.constants import CLOSE_AFTER
from botapi_emulator.encoding import json_bytes
from botapi_emulator.errors import ApiError, ControlError
from botapi_emulator.faults import Fault
from botapi_emulator.httpserver import MultipartPart, parse_multipart
from botapi_emulator.limits import Limits
from botapi_emulator.logs import log
from botapi_emulator.methods import METHODS, MethodHandler
from botapi_emulator.persistence import Journal
from botapi_emulator.protocol import Handled, Params, Request, Response, error_response
from botapi_emulator.stats import Stats
from botapi_emulator.tokens import TokenError, parse_token, safe_bot_ref, token_bot_id
from botapi_emulator.update_types import update_type_of
from botapi_emulator.uploads import FileInfo, Upload


class Emulator:
    """All state and every handler; knows nothing about sockets."""

    def __init__(self, opts: Options, temp_dir: str, journal: Journal | None) -> None:
        self.opts = opts
        self.temp_dir = temp_dir
        self.journal = journal
        self.bots: dict[int, BotState] = {}
        # next update id of bots forgotten by a reset: a re-registered bot goes on from
        # there, so update ids are never reused (consumers de-duplicate on them)
        self.retired_update_ids: dict[int, int] = {}
        self.limits = Limits()
        self.faults: list[Fault] = []
        self.stats = Stats()
        self.files: dict[str, FileInfo] = {}
        self.downloads: dict[str, FileInfo] = {}
        # received files (received.py): the working directory, tdlib's per-bot counters,
        # and each bot's downloads by their path relative to the bot's directory
        self.workdir = os.path.realpath(opts.dir or ".")
        # telegram-bot-api's default; service.py probes the file system as the real one does
        self.allow_colon_in_filenames = True
        self.perm_file_ids: dict[int, int] = {}
        self.tmp_file_ids: dict[int, int] = {}
        self.downloads_by_bot: dict[tuple[int, str], FileInfo] = {}
        self.sent_seq = 0
        self.fault_seq = 0
        self.file_seq = 0
        self.started = time.time()
        self.started_monotonic = time.monotonic()  # POST /_emulator/uptime moves it back
        self.on_down: Callable[[float], None] | None = None
        self.on_up: Callable[[], None] | None = None

    # ------------------------------------------------------------------ bots/chats --
    def register_bot(
        self,
        token: str,
        first_name: str | None = None,
        username: str | None = None,
        *,
        persist: bool = True,
    ) -> BotState:
        bot_id = parse_token(token, self.opts.filter_rem, self.opts.filter_mod)
        bot = self.bots.get(bot_id)
        if bot is None:
            start = self.retired_update_ids.get(bot_id) or random.SystemRandom().randint(
                100_000_000, 899_999_999
            )
            bot = BotState(
                id=bot_id,
                token=token,
                first_name=first_name or f"Emulated Bot {bot_id}",
                username=username or f"emulated_{bot_id}_bot",
                next_update_id=start,
            )
            self.bots[bot_id] = bot
            log.info("registered %s (@%s)", safe_bot_ref(bot_id), bot.username)
        else:
            bot.token = token
            bot.first_name = first_name or bot.first_name
            bot.username = username or bot.username
            bot.logged_out = False
        if persist and self.journal:
            self.journal.record(
                "bot",
                id=bot.id,
                token=bot.token,
                first_name=bot.first_name,
                username=bot.username,
                next=bot.next_update_id,
                base=bot.base_id,
            )
        return bot

    def register_chat(self, bot: BotState, spec: dict[str, Any]) -> ChatState:
        try:
            chat_id = int(spec["id"])
        except (KeyError, TypeError, ValueError):
            raise ControlError("every chat needs an integer id") from None
        chat_type = spec.get("type") or None
        if chat_type is not None and chat_type not in CHAT_TYPES:
            raise ControlError(f"chat type must be one of {list(CHAT_TYPES)}")
        chat = bot.chats.get(chat_id)
        if chat is None:
            chat = ChatState(chat_id, chat_type or chat_type_by_id(chat_id))
            bot.chats[chat_id] = chat
        elif chat_type:
            chat.type = chat_type
        chat.update_from(spec)
        self._journal_chat(bot, chat)
        return chat

    def _journal_chat(self, bot: BotState, chat: ChatState) -> None:
        if self.journal:
            self.journal.record("chat", b=bot.id, c=chat.to_record())

    def _observe_chat(self, bot: BotState, chat_obj: Any, touched: dict[int, ChatState]) -> None:
        if not isinstance(chat_obj, dict) or not isinstance(chat_obj.get("id"), int):
            return
        chat_id = chat_obj["id"]
        chat = bot.chats.get(chat_id)
        if chat is None:
            chat_type = chat_obj.get("type")
            chat = ChatState(
                chat_id, chat_type if chat_type in CHAT_TYPES else chat_type_by_id(chat_id)
            )
            chat.update_from(
                {
                    k: chat_obj[k]
                    for k in ("title", "username", "first_name", "last_name", "is_forum")
                    if k in chat_obj
                }
            )
            bot.chats[chat_id] = chat
        touched[chat_id] = chat

    def _observe(
        self, bot: BotState, update_type: str, payload: Any, touched: dict[int, ChatState]
    ) -> None:
        """Learn chats, message ids, members, callback and inline query ids from an injected
        update."""
        if not isinstance(payload, dict):
            return
        message = payload
        if update_type == "inline_query" and isinstance(payload.get("id"), str):
            bot.inline_ids.add(payload["id"])
        if update_type == "callback_query":
            if isinstance(payload.get("id"), str):
                bot.callback_ids.add(payload["id"])
            message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        chat_obj = message.get("chat")
        if chat_obj is None:
            return
        self._observe_chat(bot, chat_obj, touched)
        chat = touched.get(chat_obj.get("id")) if isinstance(chat_obj, dict) else None
        if chat is None:
            return
        message_id = message.get("message_id")
        if isinstance(message_id, int) and message_id > chat.last_message_id:
            chat.last_message_id = message_id
        sender = message.get("from")
        if isinstance(sender, dict) and isinstance(sender.get("id"), int):
            chat.members[sender["id"]] = sender

    def reset(self, bots: bool) -> None:
        """Forget updates, sent records, counters, faults, limits, chats, webhooks (bots)."""
        for bot in self.bots.values():
            bot.reset()
            self.retired_update_ids[bot.id] = bot.next_update_id
        if bots:
            self.bots.clear()
        self.stats = Stats()
        self.clear_faults()
        self.limits = Limits()
        self.files.clear()
        self.downloads.clear()
        self.downloads_by_bot.clear()
        if self.journal:
            self.journal.record("reset", bots=bots)
        log.info("reset (bots too: %s)", bots)

    def clear_faults(self) -> None:
        was_down = any(f.mode == "down" for f in self.faults)
        self.faults.clear()
        if was_down and self.on_up is not None:
            self.on_up()

    # ------------------------------------------------------------------ updates -----
    def inject(self, bot: BotState, updates: list[Any]) -> dict[str, Any]:
        first = bot.next_update_id
        touched: dict[int, ChatState] = {}
        known_before = set(bot.chats)
        journal = self.journal
        for update in updates:
            if not isinstance(update, dict):
                raise ControlError("every update must be a JSON object")
            update_id = bot.next_update_id
            bot.next_update_id += 1
            body: dict[str, Any] = {"update_id": update_id}
            for key, value in update.items():
                if key != "update_id":
                    body[key] = value
            update_type = update_type_of(body)
            self._observe(bot, update_type, body.get(update_type), touched)
            data = json_bytes(body)
            bot.append_update(data, update_type)
            if journal:
                journal.update(bot.id, update_id, update_type, data)
        for chat in touched.values():
            if chat.id not in known_before:
                self._journal_chat(bot, chat)
            elif journal:
                journal.message_id(bot.id, chat.id, chat.last_message_id)
        if updates:
            asyncio.get_running_loop().call_soon(bot.wake, "updates")
        last = bot.next_update_id - 1
        return {"first_update_id": first, "last_update_id": last, "count": len(updates)}

    def journal_offset(self, bot: BotState) -> None:
        if self.journal:
            self.journal.record("off", b=bot.id, c=bot.confirmed_offset, p=bot.first_pending_id())

    def collect_json(self, bot: BotState, limit: int) -> bytes:
        before = bot.pending_start
        picked = bot.collect(limit)
        if bot.pending_start != before:
            self.journal_offset(bot)
        return b"[" + b",".join(picked) + b"]"

    # ------------------------------------------------------------------ Bot API -----
    def handle_api(self, req: Request) -> Handled:
        path = req.path
        if path.startswith("/file/bot"):
            return self.counted(received.serve_download(self, path))
        if not path.startswith("/bot"):
            return self.counted(error_response(404, "Not Found"))
        token, sep, method = path[4:].partition("/")
        if not sep:
            return self.counted(error_response(404, "Not Found"))
        lower = method.lower()
        entry = METHODS.get(lower)
        self.stats.calls[entry[0] if entry else method] += 1
        fault, delay = self._match_faults(token_bot_id(token), lower)
        if delay > 0:
            return self.counted(self._delayed(delay, fault, req, token, entry))
        if fault is not None:
            return self.counted(self._fault_response(fault))
        return self.counted(self._invoke(req, token, entry))

    async def _delayed(
        self,
        delay: float,
        fault: Fault | None,
        req: Request,
        token: str,
        entry: tuple[str, MethodHandler] | None,
    ) -> Response:
        await asyncio.sleep(delay)
        if fault is not None:
            return self._fault_response(fault)
        result = self._invoke(req, token, entry)
        return result if isinstance(result, Response) else await result

    def counted(self, handled: Handled) -> Handled:
        """Count the answer's status in the stats (now, or when the awaitable finishes)."""
        if isinstance(handled, Response):
            self.stats.count_response(handled.status)
            return handled
        return self._count_later(handled)

    async def _count_later(self, awaitable: Awaitable[Response]) -> Response:
        try:
            response = await awaitable
        except ApiError as exc:
            response = error_response(exc.code, exc.description, exc.parameters)
        self.stats.count_response(response.status)
        return response

    def _invoke(self, req: Request, token: str, entry: tuple[str, MethodHandler] | None) -> Handled:
        try:
            bot = self.authorize(token)
            if entry is None:
                raise ApiError(404, "Not Found")
            params = self.parse_params(req)
            self.launch(bot)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %s", safe_bot_ref(bot.id), entry[0], sorted(params))
            return entry[1](self, bot, params)
        except ApiError as exc:
            return error_response(exc.code, exc.description, exc.parameters)

    def launch(self, bot: BotState) -> None:
        """A request for a bot this server does not run starts its instance (telegram-bot-api
        creates a Client for the token); its queue is the one it kept, if any."""
        if bot.launched_at is None:
            bot.launched_at = time.monotonic()
            log.info("%s launched on this server", safe_bot_ref(bot.id))

    def close_refused_for(self, bot: BotState) -> int:
        """Seconds ``close`` is still refused for: telegram-bot-api answers 429 in the first
        10 minutes after an instance launched, unless it launched within the first 10
        minutes of the server's own start."""
        launched = bot.launched_at if bot.launched_at is not None else time.monotonic()
        retry_after = int(CLOSE_AFTER - (time.monotonic() - launched))
        if retry_after > 0 and launched > self.started_monotonic + CLOSE_AFTER:
            return retry_after
        return 0

    def authorize(self, token: str) -> BotState:
        try:
            bot_id = parse_token(token, self.opts.filter_rem, self.opts.filter_mod)
        except TokenError as exc:
            raise ApiError(exc.status, exc.description) from None
        bot = self.bots.get(bot_id)
        if bot is None or bot.token != token or bot.logged_out:
            raise ApiError(401, "Unauthorized")
        return bot

    def parse_params(self, req: Request) -> Params:
        params: Params = dict(urllib.parse.parse_qsl(req.query, keep_blank_values=True))
        if not req.body:
            return params
        content_type = req.headers.get("content-type", "")
        main_type = content_type.partition(";")[0].strip().lower()
        if main_type == "application/json":
            params.update(self._json_params(req.body))
        elif main_type == "application/x-www-form-urlencoded":
            text = req.body.decode("utf-8", "replace")
            params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        elif main_type == "multipart/form-data":
            params.update(self._multipart_params(req.body, content_type))
        return params

    @staticmethod
    def _json_params(body: bytes) -> Params:
        try:
            value = json.loads(body)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON object") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Bad Request: can't parse JSON object")
        return {key: item for key, item in value.items() if item is not None}

    def _multipart_params(self, body: bytes, content_type: str) -> Params:
        match = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', content_type, re.I)
        if not match:
            raise ApiError(400, "Bad Request: can't parse multipart/form-data: no boundary")
        boundary = (match.group(1) or match.group(2)).encode("latin-1")
        try:
            parts = parse_multipart(body, boundary)
        except ValueError as exc:
            raise ApiError(400, f"Bad Request: can't parse multipart/form-data: {exc}") from None
        params: Params = {}
        for part in parts:
            if part.filename is None:
                params[part.name] = part.data.decode("utf-8", "replace")
            else:
                params[part.name] = self._save_upload(part)
        return params

    def _save_upload(self, part: MultipartPart) -> Upload:
        self.file_seq += 1
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(part.filename or "file"))[:80]
        path = os.path.join(self.temp_dir, f"upload-{os.getpid()}-{self.file_seq}-{safe}")
        with open(path, "wb") as handle:
            handle.write(part.data)
        return Upload(
            field=part.name,
            filename=part.filename or "file",
            content_type=part.content_type or "application/octet-stream",
            path=path,
            size=len(part.data),
            sha256=hashlib.sha256(part.data).hexdigest(),
        )

    # faults ---------------------------------------------------------------------------
    def _match_faults(self, bot_id: int | None, method: str) -> tuple[Fault | None, float]:
        if not self.faults:
            return None, 0.0
        now = time.monotonic()
        self.faults = [f for f in self.faults if f.active(now) or f.mode == "down"]
        action: Fault | None = None
        delay = 0.0
        for fault in self.faults:
            if fault.mode == "down" or not fault.matches(bot_id, method):
                continue
            if fault.mode == "delay":
                delay = max(delay, fault.delay)
            elif action is None:
                action = fault
            else:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
        return action, delay

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        if fault.mode == "drop":
            return Response(0, b"", drop=True)
        parameters = None
        if fault.status == 429:
            parameters = {"retry_after": fault.retry_after}
        return error_response(fault.status, fault.description, parameters)
