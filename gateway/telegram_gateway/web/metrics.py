"""``GET /metrics``: Prometheus text format, aggregated over every gunicorn worker (no token:
the gateway listens on loopback only)."""

from __future__ import annotations

from flask import Blueprint, Response

from telegram_gateway import metrics

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def render_metrics() -> Response:
    response = Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response
