"""``GET /openapi.json``: the OpenAPI 3.1 description of the gateway's HTTP surface.

Written by hand as a Python dict, except the ``/send`` body, which is built from
:data:`telegram_gateway.outbound.FIELDS` (the table the validation uses), so the two cannot
drift apart. ``tests/gateway/test_openapi.py`` fuzzes the running gateway against it.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response

from telegram_gateway import __version__
from telegram_gateway.idempotency import KEY_RE
from telegram_gateway.outbound import (
    CAPTION_LIMIT,
    FIELDS,
    MAX_ID,
    MAX_STRING,
    MAX_TEXT,
    MEDIA_METHODS,
    REPLY_MARKUP_KINDS,
    TEXT_LIMIT,
)

blueprint = Blueprint("openapi", __name__)

_ID = {"type": "integer", "minimum": -MAX_ID + 1, "maximum": MAX_ID - 1}
_DESCRIPTIONS = {
    "bot": "Bot id or configured bot name; may be left out when one bot is configured.",
    "chat_id": "Target chat: an integer id (> 0 a user, < 0 a group, -100… a supergroup or "
    "channel) or @username of a public supergroup or channel.",
    "text": f"Message text. Plain text longer than {TEXT_LIMIT} characters is split into "
    f"several messages (paragraph, line, then word boundaries); with parse_mode or entities "
    f"it is sent as one message. At most {MAX_TEXT} characters.",
    "parse_mode": "Formatting of text or caption.",
    "caption": f"Media caption; at most {CAPTION_LIMIT} characters when plain.",
}


def _media_schema(name: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 4096,
        "description": f"The {name}: a file_id, an http(s) URL, or a local file as an absolute "
        "path or a file:// URI (the local Bot API server reads it, up to 2000 MB), accepted "
        "only when its real path lies inside GATEWAY_MEDIA_DIRS (else 400 naming the setting).",
    }


def _field_schema(name: str) -> dict[str, Any]:
    kind = FIELDS[name].kind
    schema: dict[str, Any]
    if kind == "bot":
        schema = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1}]}
    elif kind == "chat":
        schema = {
            "oneOf": [
                {**_ID, "not": {"const": 0}},
                {"type": "string", "pattern": "^(@[A-Za-z0-9_]{1,64}|-?0*[1-9][0-9]{0,15})$"},
            ]
        }
    elif kind == "media":
        schema = _media_schema(name)
    elif kind == "int":
        schema = {"type": "integer", "minimum": 0, "maximum": MAX_ID - 1}
    elif kind == "bool":
        schema = {"type": "boolean"}
    elif kind == "array":
        schema = {"type": "array", "items": {"type": "object"}}
    elif name == "reply_markup":
        schema = {"$ref": "#/components/schemas/ReplyMarkup"}
    elif name == "reply_parameters":
        schema = {
            "type": "object",
            "required": ["message_id"],
            "properties": {"message_id": {"type": "integer"}},
        }
    elif kind == "object":
        schema = {"type": "object"}
    elif name == "text":
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S"}
    elif name == "parse_mode":
        schema = {"type": "string", "enum": ["HTML", "Markdown", "MarkdownV2"]}
    else:
        schema = {"type": "string", "maxLength": MAX_STRING}
    if name in _DESCRIPTIONS:
        schema = {**schema, "description": _DESCRIPTIONS[name]}
    return schema


def _send_request() -> dict[str, Any]:
    """The JSON body of /send: exactly one of text / a media field; fields that belong to
    one kind of message only require it."""
    media = list(MEDIA_METHODS)
    dependent: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        if name in ("text", *media):
            continue
        if spec.where == "text":
            dependent[name] = {"required": ["text"]}
        elif spec.where == "media":
            dependent[name] = {"anyOf": [{"required": [m]} for m in media]}
        elif spec.where in media:
            dependent[name] = {"required": [spec.where]}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["chat_id"],
        "properties": {name: _field_schema(name) for name in FIELDS},
        "oneOf": [{"required": [name]} for name in ("text", *media)],
        "dependentSchemas": dependent,
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def build() -> dict[str, Any]:
    """The whole document."""
    send_request = _send_request()
    multipart = {
        "type": "object",
        "description": "The same fields as the JSON body (objects and arrays as JSON text); "
        "the media field carries the uploaded file.",
        "properties": {
            **{n: _field_schema(n) for n in FIELDS if n not in MEDIA_METHODS},
            **{
                n: {"type": "string", "contentMediaType": "application/octet-stream"}
                for n in MEDIA_METHODS
            },
        },
        "required": ["chat_id"],
    }
    retry_after = {
        "Retry-After": {
            "description": "Seconds after which a retry may be accepted",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telegram-gateway",
            "version": __version__,
            "description": "Send Telegram messages through the local Bot API server, paced to "
            "Telegram's limits; health and metrics. The gateway listens on loopback only.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/send": {
                "post": {
                    "operationId": "send",
                    "summary": "Send a message (a long plain text as several) to a chat",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "A retry with the same key returns the first "
                            "result instead of sending again (kept GATEWAY_IDEMPOTENCY_TTL s).",
                            "schema": {"type": "string", "pattern": KEY_RE.pattern},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SendRequest"}
                            },
                            "multipart/form-data": {"schema": multipart},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Sent: one Message per message, in order",
                            "headers": {
                                "Idempotent-Replayed": {
                                    "description": "true when this is a stored answer",
                                    "schema": {"type": "string", "enum": ["true"]},
                                }
                            },
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/SendResult"}
                                }
                            },
                        },
                        "400": _error(
                            "Malformed request (`<field>: <reason>`) or Telegram's "
                            "400 (e.g. chat not found)"
                        ),
                        "401": _error(
                            "Missing or wrong bearer token",
                            {"WWW-Authenticate": {"schema": {"type": "string"}}},
                        ),
                        "403": _error("Telegram's 403 (bot blocked by the user, kicked, ...)"),
                        "409": _error(
                            "Idempotency-Key still in flight or interrupted; or Telegram's 409"
                        ),
                        "408": _error("The request body stalled (no data for 10 s)"),
                        "411": _error("A multipart/form-data body without Content-Length"),
                        "413": _error(
                            "Body too large (JSON: 2 MiB; an upload: 2000 MB or "
                            "GATEWAY_UPLOAD_MAX_BYTES)"
                        ),
                        "422": _error("Idempotency-Key already used for a different request"),
                        "429": _error(
                            "Telegram's limits: retry after Retry-After seconds", retry_after
                        ),
                        "502": _error("The Bot API is unreachable or failed"),
                        "503": _error(
                            "The Idempotency-Key store is unusable, or the gateway's uploads "
                            "are at GATEWAY_UPLOAD_CONCURRENCY or GATEWAY_UPLOAD_MAX_BYTES "
                            "(retry after Retry-After seconds)",
                            retry_after,
                        ),
                        "504": _error("The Bot API did not answer within GATEWAY_SEND_TIMEOUT"),
                    },
                }
            },
            "/files/{bot}/{file_id}": {
                "get": {
                    "operationId": "downloadFile",
                    "summary": "The bytes of a file a user sent (the bot's file_id from an "
                    "update), streamed from the Bot API server's folder",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "bot",
                            "in": "path",
                            "required": True,
                            "description": "Bot id or configured name",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "file_id",
                            "in": "path",
                            "required": True,
                            "description": "file_id of a photo size, voice, document, ...",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The file; Content-Disposition names it",
                            "headers": {
                                "Content-Disposition": {"schema": {"type": "string"}},
                                "X-Telegram-File-Unique-Id": {"schema": {"type": "string"}},
                            },
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                                "*/*": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        "400": _error("file_id is not a Bot API file_id"),
                        "401": _error("Missing or wrong bearer token"),
                        "403": _error(
                            "The Bot API server named a file outside the bot's folder under "
                            "TELEGRAM_API_DIR"
                        ),
                        "404": _error("No such bot, or Telegram does not know the file_id"),
                        "502": _error("The Bot API failed, or the file cannot be read"),
                        "504": _error("getFile did not answer within 300 s"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Health of the gateway and what it depends on",
                    "responses": {
                        "200": {
                            "description": "Every check is ok",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "503": {
                            "description": "At least one check failed (named in checks)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of every worker",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "GATEWAY_API_TOKEN",
                }
            },
            "schemas": {
                "SendRequest": send_request,
                "ReplyMarkup": {
                    "type": "object",
                    "description": "Exactly one of " + ", ".join(REPLY_MARKUP_KINDS),
                    "oneOf": [
                        {
                            "required": ["inline_keyboard"],
                            "properties": {
                                "inline_keyboard": {
                                    "type": "array",
                                    "items": {"type": "array", "items": {"type": "object"}},
                                }
                            },
                        },
                        {
                            "required": ["keyboard"],
                            "properties": {
                                "keyboard": {
                                    "type": "array",
                                    "items": {
                                        "type": "array",
                                        "items": {"type": ["object", "string"]},
                                    },
                                }
                            },
                        },
                        {"required": ["remove_keyboard"]},
                        {"required": ["force_reply"]},
                    ],
                },
                "Message": {
                    "type": "object",
                    "description": "The Bot API's Message object, unchanged",
                    "required": ["message_id", "date", "chat"],
                    "properties": {
                        "message_id": {"type": "integer"},
                        "date": {"type": "integer"},
                        "chat": {
                            "type": "object",
                            "required": ["id", "type"],
                            "properties": {
                                "id": {"type": "integer"},
                                "type": {"type": "string"},
                            },
                        },
                    },
                },
                "SendResult": {
                    "type": "object",
                    "required": ["ok", "result"],
                    "properties": {
                        "ok": {"const": True},
                        "result": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/components/schemas/Message"},
                        },
                        "migrated_to_chat_id": {
                            "type": "integer",
                            "description": "The group became this supergroup; the message "
                            "went there",
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["ok", "error"],
                    "properties": {
                        "ok": {"const": False},
                        "error": {"type": "string"},
                        "error_code": {"type": "integer"},
                        "description": {
                            "type": "string",
                            "description": "Telegram's description, when Telegram refused",
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "retry_after": {"type": "integer"},
                                "migrate_to_chat_id": {"type": "integer"},
                            },
                        },
                        "result": {
                            "type": "array",
                            "description": "Parts of a long text sent before the failure",
                            "items": {"$ref": "#/components/schemas/Message"},
                        },
                        "migrated_to_chat_id": {"type": "integer"},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "service", "telegram_api", "nats", "checks"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded"]},
                        "service": {"type": "string"},
                        "telegram_api": {"type": "string"},
                        "nats": {"type": "string"},
                        "checks": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["ok", "reason"],
                                "properties": {
                                    "ok": {"type": "boolean"},
                                    "reason": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }


_DOCUMENT: bytes | None = None


@blueprint.get("/openapi.json")
def openapi() -> Response:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = json.dumps(build(), ensure_ascii=False).encode()
    return Response(_DOCUMENT, mimetype="application/json")
