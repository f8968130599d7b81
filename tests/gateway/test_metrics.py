from __future__ import annotations

import pytest

from harness.tokens import fake_token
from telegram_gateway import metrics
from telegram_gateway.app import create_app

pytestmark = pytest.mark.unit


def test_metrics_without_multiprocess_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.UPDATES_PUBLISHED.labels("77", "message").inc(3)
    metrics.GETUPDATES_ERRORS.labels("77", "409").inc()
    metrics.PUBLISH_SECONDS.labels("77").observe(0.004)
    metrics.POLLER_LAG.labels("77").set(1.5)
    app = create_app(
        env={
            "TELEGRAM_BOT_TOKENS": fake_token(77),
            "GATEWAY_API_TOKEN": "m" * 20,
            "GATEWAY_STATE_DIR": str(tmp_path),
        }
    )
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'telegram_gateway_updates_published_total{bot="77",type="message"} 3.0' in text
    assert 'telegram_gateway_getupdates_errors_total{bot="77",code="409"} 1.0' in text
    assert 'telegram_gateway_publish_seconds_bucket{bot="77",le="0.005"} 1.0' in text
    assert 'telegram_gateway_poller_lag_seconds{bot="77"} 1.5' in text
    assert "telegram_gateway_nats_connected" in text
