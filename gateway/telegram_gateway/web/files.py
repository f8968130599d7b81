"""``GET /files/<bot>/<file_id>``: the bytes of a file a user sent, streamed from the Bot API
server's folder (:mod:`telegram_gateway.files` decides what may be read).

``Authorization: Bearer $GATEWAY_API_TOKEN`` as on ``/send``, or 401. ``<bot>`` is the bot id
or its configured name. Answers: 200 with the file (``Content-Type`` guessed from its
extension, ``Content-Length``, ``Content-Disposition: attachment; filename=…``); JSON errors
``{"ok":false,"error":…,"error_code":…}`` otherwise: 400 malformed ``file_id``, 403 the server
named a file outside the bot's folder, 404 unknown bot or ``file_id``, 502/504 the Bot API
failed or the file cannot be read. No size cap: the server's own (2000 MB in local mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.http import dump_options_header

from telegram_gateway import metrics
from telegram_gateway.files import FileProblem, ReceivedFiles
from telegram_gateway.web.send import authorized

blueprint = Blueprint("files", __name__)

CHUNK = 64 * 1024


@blueprint.get("/files/<bot>/<file_id>")
def download(bot: str, file_id: str) -> Response:
    gateway = current_app.extensions["telegram_gateway"]
    if not authorized(request.headers.get("Authorization"), gateway.settings.api_token):
        response = _error(
            FileProblem(401, "unauthorized: send Authorization: Bearer <GATEWAY_API_TOKEN>")
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="telegram-gateway"'
        return response
    config = gateway.settings.bot(bot)
    if config is None:
        return _error(FileProblem(404, f"Not Found: no bot {bot[:64]!r} is configured"))
    files: ReceivedFiles = gateway.files
    try:
        received = files.locate(config, file_id)
        reader, size = files.open(received)
    except FileProblem as exc:
        metrics.FILES.labels(str(config.bot_id), "http", _outcome(exc)).inc()
        return _error(exc)
    metrics.FILES.labels(str(config.bot_id), "http", "streamed").inc()
    response = Response(
        _chunks(reader, str(config.bot_id)),
        status=200,
        mimetype=received.content_type,
        direct_passthrough=True,
    )
    response.headers["Content-Length"] = str(size)
    response.headers["Content-Disposition"] = dump_options_header(
        "attachment", {"filename": received.name}
    )
    response.headers["X-Telegram-File-Unique-Id"] = received.file_unique_id
    response.headers["X-Telegram-File-Path"] = received.file_path
    return response


def _chunks(reader: BinaryIO, bot: str) -> Iterator[bytes]:
    with reader:
        while chunk := reader.read(CHUNK):
            metrics.FILES_BYTES.labels(bot, "http").inc(len(chunk))
            yield chunk


def _outcome(problem: FileProblem) -> str:
    return {404: "not_found", 413: "too_large"}.get(problem.status, "failed")


def _error(problem: FileProblem) -> Response:
    response = jsonify(ok=False, error=problem.description, error_code=problem.status)
    response.status_code = problem.status
    return response
