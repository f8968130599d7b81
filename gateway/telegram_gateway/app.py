"""``create_app``: settings (defaults -> environment -> overrides), validated, then the Flask
app with one blueprint per concern and JSON errors everywhere."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from telegram_gateway import logs
from telegram_gateway.config import Settings, load_settings
from telegram_gateway.service import Gateway
from telegram_gateway.web import files as files_web
from telegram_gateway.web import health
from telegram_gateway.web import metrics as metrics_web
from telegram_gateway.web import openapi as openapi_web
from telegram_gateway.web import send as send_web
from telegram_gateway.web.connection import close_after_answer
from telegram_gateway.web.uploads import UploadSpool

logger = logging.getLogger(__name__)

EXTENSION = "telegram_gateway"
# answers after which the rest of the request body is not read: the connection is closed
CLOSE_AFTER = (400, 408, 411, 413)


def create_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    gateway: Gateway | None = None,
) -> Flask:
    """Build the app. ``env`` defaults to ``os.environ``; ``overrides`` are Settings fields."""
    settings: Settings = (
        gateway.settings
        if gateway
        else load_settings(os.environ if env is None else env, overrides)
    )
    logs.configure(
        settings.log_level,
        [settings.api_token, settings.nats_password] + [b.token for b in settings.bots],
    )
    gateway = gateway or Gateway(settings)
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = gateway
    app.extensions[send_web.UPLOADS] = UploadSpool(
        settings.state_dir / "uploads", settings.upload_concurrency, settings.upload_max_bytes
    )
    app.register_blueprint(health.blueprint)
    app.register_blueprint(metrics_web.blueprint)
    app.register_blueprint(send_web.blueprint)
    app.register_blueprint(files_web.blueprint)
    app.register_blueprint(openapi_web.blueprint)
    _register_error_handlers(app)
    return app


def gateway_of(app: Flask) -> Gateway:
    return app.extensions[EXTENSION]  # type: ignore[no-any-return]


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        response = jsonify(ok=False, error=exc.description or exc.name)
        response.status_code = exc.code or 500
        if response.status_code in CLOSE_AFTER:
            close_after_answer()
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        logger.exception("unhandled error")
        response = jsonify(ok=False, error="internal error; see the gateway's log")
        response.status_code = 500
        return response
