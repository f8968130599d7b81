"""``GET /openapi.json`` describes the real behaviour: schemathesis fuzzes the running gateway
(gunicorn + gevent, emulator behind it) from the document and checks every answer against it;
no input gives a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from outbound_fixtures import BOT, PRIVATE, outbound_stack
from schemathesis import GenerationMode

from telegram_gateway.outbound import FIELDS, MEDIA_METHODS
from telegram_gateway.web import openapi

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    # no waiting for Telegram's limits while fuzzing: a send that would wait is a 429 at once
    with outbound_stack(tmp_path_factory.mktemp("openapi"), GATEWAY_SEND_MAX_WAIT="0") as stack:
        yield stack


@pytest.fixture(scope="module")
def api_schema(out):
    return schemathesis.openapi.from_url(out.url + "/openapi.json")


def test_the_document_is_served_and_matches_the_validation(out):
    status, document = out.gateway.get("/openapi.json")
    assert status == 200
    assert document == openapi.build()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/send",
        "/files/{bot}/{file_id}",
        "/healthz",
        "/metrics",
        "/openapi.json",
    }
    request = document["components"]["schemas"]["SendRequest"]
    assert set(request["properties"]) == set(FIELDS)
    assert request["additionalProperties"] is False
    assert request["oneOf"] == [{"required": [n]} for n in ("text", *MEDIA_METHODS)]


def test_documented_examples_behave_as_documented(out):
    ok = out.send({"bot": BOT, "chat_id": PRIVATE[0], "text": "documented"})
    assert ok[0] == 200 and ok[1]["ok"] is True
    document = openapi.build()
    responses = document["paths"]["/send"]["post"]["responses"]
    for status in (400, 401, 403, 429, 502, 504):
        assert str(status) in responses


# schemathesis' own pytest integration (``from_fixture``) does not work with pytest 9 yet, so
# the operations' Hypothesis strategies are driven directly
@pytest.mark.parametrize(
    ("path", "method", "mode", "examples"),
    [
        ("/send", "POST", GenerationMode.POSITIVE, 60),
        ("/send", "POST", GenerationMode.NEGATIVE, 40),
        ("/files/{bot}/{file_id}", "GET", GenerationMode.POSITIVE, 20),
        ("/files/{bot}/{file_id}", "GET", GenerationMode.NEGATIVE, 10),
        ("/healthz", "GET", GenerationMode.POSITIVE, 5),
        ("/metrics", "GET", GenerationMode.POSITIVE, 5),
        ("/openapi.json", "GET", GenerationMode.POSITIVE, 5),
    ],
)
def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(
    out, api_schema, path, method, mode, examples
):
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {out.api_token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(
            headers=headers,
            timeout=30,
            excluded_checks=[schemathesis.checks.positive_data_acceptance],
        )

    fuzz()
