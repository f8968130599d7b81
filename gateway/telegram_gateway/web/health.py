"""``GET /healthz``: 200 when every check is ok, else 503 naming each failing check."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    gateway = current_app.extensions["telegram_gateway"]
    body = gateway.health()
    response = jsonify(body)
    response.status_code = 200 if body["status"] == "ok" else 503
    response.headers["Cache-Control"] = "no-store"
    return response
