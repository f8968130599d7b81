"""``POST /send``: a message (or a long text as several) to a chat, through the one sender.

``Authorization: Bearer $GATEWAY_API_TOKEN`` (compared in constant time) or 401. The body is
JSON (any Content-Type but multipart) or ``multipart/form-data`` carrying the file of the media
field; see :mod:`telegram_gateway.outbound` for the fields. Answers:

* 200 ``{"ok":true,"result":[Message, …]}`` -- the Bot API's Message objects, one per message
  sent, plus ``"migrated_to_chat_id"`` when the group had become a supergroup;
* 400 ``{"ok":false,"error":"<field>: <reason>"}`` for anything malformed;
* Telegram's refusals keep their code (400, 403, 409) with its ``description``, ``error_code``
  and ``parameters``; ``result`` lists the parts of a long text already sent, if any;
* 429 with ``Retry-After`` when the message would wait longer than GATEWAY_SEND_MAX_WAIT for
  Telegram's limits (or Telegram still said 429 after the retries);
* 502 when the Bot API is unreachable or refused the bot's token, 504 when it did not answer
  within GATEWAY_SEND_TIMEOUT; 503 when the Idempotency-Key store is unusable;
* ``Idempotency-Key``: a retry gets the stored answer with ``Idempotent-Replayed: true``;
  409 while the first is still being sent (after waiting for it) or if it was interrupted,
  422 when the key was used for a different request;
* the body: 413 when it is larger than the route allows, 408 when it stalls, 400 when it
  cannot be read (:mod:`telegram_gateway.web.request_body`); an upload may be refused with
  503 + ``Retry-After``, 411 or 413 (:mod:`telegram_gateway.web.uploads`). After any of these
  and after a 401 the connection is closed without reading the rest of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from contextlib import ExitStack
from typing import Any

from flask import Blueprint, Request, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import parse_form_data

from telegram_gateway.config import Settings
from telegram_gateway.errors import (
    BotApiTimeout,
    IdempotencyUnavailable,
    InvalidRequest,
    PacingUnavailable,
    RateLimited,
)
from telegram_gateway.idempotency import Outcome, fingerprint, valid_key
from telegram_gateway.outbound import MEDIA_METHODS, SendPlan, Upload, from_form, plan
from telegram_gateway.sender import Delivery
from telegram_gateway.web.connection import close_after_answer
from telegram_gateway.web.request_body import reading_body
from telegram_gateway.web.uploads import UploadRefused, UploadSpool

blueprint = Blueprint("send", __name__)

JSON_LIMIT = 2 * 1024 * 1024  # bytes of a JSON body (65536 characters of text fit easily)
UPLOAD_LIMIT = 2000 * 1024 * 1024  # bytes of a multipart body: the local Bot API's file limit
PASSED_THROUGH = (400, 403, 409)  # Telegram codes /send answers with unchanged
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
UPLOADS = "telegram_gateway.uploads"  # app.extensions key of the UploadSpool


@blueprint.post("/send")
def send() -> Response:
    gateway = current_app.extensions["telegram_gateway"]
    settings: Settings = gateway.settings
    if not authorized(request.headers.get("Authorization"), settings.api_token):
        response = _json(
            401,
            {"ok": False, "error": "unauthorized: send Authorization: Bearer <GATEWAY_API_TOKEN>"},
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="telegram-gateway"'
        close_after_answer()  # the body is never read
        return response
    with ExitStack() as request_scope:  # an upload's spool file lives until the answer
        try:
            key = request.headers.get(IDEMPOTENCY_HEADER)
            if key is not None and not valid_key(key):
                raise InvalidRequest(IDEMPOTENCY_HEADER, "must be 1-255 printable ASCII characters")
            spool: UploadSpool = current_app.extensions[UPLOADS]
            send_plan = _plan(request, settings, spool, request_scope)
        except InvalidRequest as exc:
            close_after_answer()  # the body may not have been read to its end
            return _json(400, {"ok": False, "error": str(exc)})
        except UploadRefused as exc:
            close_after_answer()  # the body is never read
            response = _json(exc.status, {"ok": False, "error": str(exc)})
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        return _answer(gateway, send_plan, key)


def _answer(gateway: Any, send_plan: SendPlan, key: str | None) -> Response:
    def compute() -> Outcome:
        delivery = gateway.sender.send(
            send_plan.bot, send_plan.method, send_plan.parts, send_plan.upload
        )
        return outcome_of(delivery)

    replayed = False
    if key is None:
        outcome = compute()
    else:
        try:
            outcome, replayed = gateway.idempotency.run(
                "http:" + key,
                fingerprint(send_plan.fingerprint_source()),
                compute,
                gateway.sender.longest(len(send_plan.parts)),
            )
        except IdempotencyUnavailable as exc:
            outcome = Outcome(503, {"ok": False, "error": str(exc)}, {"Retry-After": "1"})
    response = _json(outcome.status, outcome.body)
    response.headers.update(outcome.headers)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def outcome_of(delivery: Delivery) -> Outcome:
    """The HTTP answer for a delivery (and whether an Idempotency-Key keeps it)."""
    body: dict[str, Any]
    headers: dict[str, str] = {}
    if delivery.ok:
        status, body = 200, {"ok": True, "result": delivery.results}
    elif delivery.failure is not None:
        failure = delivery.failure
        body = {"ok": False, "error": str(failure)}
        if isinstance(failure, RateLimited):
            status = 429
            headers["Retry-After"] = str(failure.retry_after)
            body["error_code"] = 429
            body["parameters"] = {"retry_after": failure.retry_after}
        elif isinstance(failure, PacingUnavailable):
            status = 503
            headers["Retry-After"] = str(failure.retry_after)
        else:
            status = 504 if isinstance(failure, BotApiTimeout) else 502
    else:
        envelope = delivery.telegram_error or {}
        code = envelope.get("error_code")
        description = str(envelope.get("description") or "the Bot API refused the request")
        body = {"ok": False, "error": description}
        for name in ("error_code", "description", "parameters"):
            if name in envelope:
                body[name] = envelope[name]
        if code in PASSED_THROUGH:
            status = int(code)  # type: ignore[arg-type]
        elif code == 429:
            status = 429
            retry_after = (envelope.get("parameters") or {}).get("retry_after", 1)
            headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
        else:
            # 401 (the bot's token was refused), 404, 5xx: the gateway's upstream failed
            status = 502
    if not delivery.ok and delivery.results:
        body["result"] = delivery.results
    if delivery.migrated_to is not None:
        body["migrated_to_chat_id"] = delivery.migrated_to
    return Outcome(status=status, body=body, headers=headers, store=delivery.final)


def _plan(req: Request, settings: Settings, spool: UploadSpool, scope: ExitStack) -> SendPlan:
    if req.mimetype == "multipart/form-data":
        return _multipart_plan(req, settings, spool, scope)
    # werkzeug stops a chunked body at max_content_length without an error: one byte more
    # tells a body that is too large from one that is just the limit
    req.max_content_length = JSON_LIMIT + 1
    with reading_body(req.environ):
        raw = req.get_data(cache=False)
    if len(raw) > JSON_LIMIT:
        raise RequestEntityTooLarge(f"body: a JSON body is at most {JSON_LIMIT} bytes")
    if not raw.strip():
        raise InvalidRequest("body", "must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("body", f"not valid JSON ({str(exc)[:100]})") from None
    return plan(body, settings)


def _multipart_plan(
    req: Request, settings: Settings, spool: UploadSpool, scope: ExitStack
) -> SendPlan:
    if req.content_length is not None and req.content_length > UPLOAD_LIMIT:
        raise RequestEntityTooLarge(
            f"body: a multipart/form-data body is at most {UPLOAD_LIMIT} bytes "
            "(the local Bot API's file limit)"
        )
    spool_file = scope.enter_context(spool.reserve(req.content_length))
    with reading_body(req.environ):
        try:
            _, form, files = parse_form_data(
                req.environ,
                stream_factory=spool_file,
                max_form_memory_size=JSON_LIMIT,
                max_content_length=UPLOAD_LIMIT,
                silent=False,
            )
        except InvalidRequest:
            raise
        except ValueError:
            raise InvalidRequest("body", "malformed multipart/form-data") from None
    if len(files) > 1:
        raise InvalidRequest("body", "one file per message")
    upload: Upload | None = None
    for name, storage in files.items():
        if name not in MEDIA_METHODS:
            raise InvalidRequest(
                name[:64], "files are accepted only as " + ", ".join(MEDIA_METHODS)
            )
        digest = hashlib.sha256()
        size = 0
        stream = storage.stream
        stream.seek(0)
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
        stream.seek(0)
        if size == 0:
            raise InvalidRequest(name, "the uploaded file is empty")
        upload = Upload(
            field=name,
            filename=storage.filename or name,
            stream=stream,
            content_type=storage.mimetype or "application/octet-stream",
            size=size,
            digest=digest.hexdigest(),
        )
    body = from_form({name: form.get(name, "") for name in form})
    return plan(body, settings, upload)


def _json(status: int, body: dict[str, Any]) -> Response:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(data, status=status, mimetype="application/json")
