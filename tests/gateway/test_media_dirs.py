"""Local files are sent only from GATEWAY_MEDIA_DIRS: the check (``telegram_gateway.media``),
and on a running gateway for ``/send`` (JSON and multipart form fields) and NATS
(``sendDocument``, ``sendMediaGroup``, ``editMessageMedia``): a path outside is a 400 naming the
setting and the emulator receives nothing; a file inside is sent."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from outbound_fixtures import BOT, PRIVATE, outbound_stack

from harness.tokens import fake_token
from telegram_gateway.config import load_settings
from telegram_gateway.errors import ConfigError, InvalidRequest
from telegram_gateway.media import check_params, check_value, local_path
from telegram_gateway.outbound import plan


# ---- unit: the check ---------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """/srv/out (allowed) next to /srv/outbox (not allowed), a secret outside, links."""
    out = tmp_path / "srv" / "out"
    outbox = tmp_path / "srv" / "outbox"
    out.mkdir(parents=True)
    outbox.mkdir()
    (out / "ok.txt").write_text("fine")
    (out / "sub").mkdir()
    (out / "sub" / "deep.txt").write_text("deep")
    (out / "a b%.txt").write_text("odd name")
    (outbox / "near.txt").write_text("in the dir with the longer name")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (out / "escape").symlink_to(secret)
    (out / "escape_dir").symlink_to(tmp_path)
    (out / "inner_link").symlink_to(out / "ok.txt")
    return {"out": out, "outbox": outbox, "secret": secret, "root": tmp_path}


def refused(field: str, value: str, dirs: list[Path], reason: str = "GATEWAY_MEDIA_DIRS") -> None:
    with pytest.raises(InvalidRequest) as info:
        check_value(field, value, dirs)
    assert info.value.field == field
    assert reason in info.value.reason, info.value.reason


@pytest.mark.unit
def test_a_file_inside_the_directory_is_allowed(tree):
    out = tree["out"]
    assert check_value("document", str(out / "ok.txt"), [out]) == str(out / "ok.txt")
    assert check_value("document", f"file://{out}/ok.txt", [out]) == str(out / "ok.txt")
    assert check_value("document", f"file://localhost{out}/sub/deep.txt", [out]) == str(
        out / "sub" / "deep.txt"
    )
    assert check_value("document", f"file://{out}/a%20b%25.txt", [out]) == str(out / "a b%.txt")
    # a symlink that stays inside, and `..` that stays inside
    assert check_value("photo", str(out / "inner_link"), [out]) == str(out / "ok.txt")
    assert check_value("photo", f"{out}/sub/../ok.txt", [out]) == str(out / "ok.txt")


@pytest.mark.unit
def test_values_that_name_no_local_file_pass_unchanged(tree):
    for value in ("AgACAgIAAxkBAAIB", "https://example.org/a.jpg", "attach://file0", "a/b.txt"):
        assert local_path(value) is None
        assert check_value("photo", value, [tree["out"]]) is None


@pytest.mark.unit
def test_a_symlink_out_of_the_directory_is_refused(tree):
    out = tree["out"]
    refused("document", str(out / "escape"), [out])
    refused("document", f"file://{out}/escape_dir/secret.txt", [out])


@pytest.mark.unit
def test_dot_dot_out_of_the_directory_is_refused(tree):
    out = tree["out"]
    refused("document", f"{out}/../../secret.txt", [out])
    refused("document", f"file://{out}/%2e%2e/%2E%2E/secret.txt", [out])


@pytest.mark.unit
def test_percent_encoding_is_decoded_as_the_server_does(tree):
    out, secret = tree["out"], tree["secret"]
    encoded = "".join(f"%{byte:02x}" for byte in str(secret).encode())
    refused("document", "file://" + encoded, [out])  # file:// + "/..." all encoded
    refused("document", "file://localhost" + encoded, [out])
    refused("document", f"file://{out}%2F..%2F..%2Fsecret.txt", [out])
    assert local_path("file://localhost%2Fetc%2Fpasswd") == "/etc/passwd"


@pytest.mark.unit
def test_file_uri_variants_are_held_to_the_same_rule(tree):
    out, secret = tree["out"], tree["secret"]
    for value in (
        f"file://{secret}",
        f"file://localhost{secret}",
        f"FILE://{secret}",
        f"File://localhost{secret}",
        f"file:///{secret}",  # four slashes: //tmp/..., the same file
        f"  file://{secret}",
        f" {secret}",
    ):
        refused("document", value, [out])
    # what the real server would read relative to its working directory is refused too
    for value in (
        "file:etc/passwd",
        "file:/etc/passwd",
        "file://host/etc/passwd",
        f"file:/{secret}",
    ):
        refused("document", value, [out], "absolute path")
    assert local_path("file:/etc/passwd") == "etc/passwd"
    assert local_path("file://localhostx/etc") == "x/etc"


@pytest.mark.unit
def test_a_directory_whose_name_is_a_prefix_of_another_is_not_the_other(tree):
    out, outbox = tree["out"], tree["outbox"]
    refused("document", str(outbox / "near.txt"), [out])
    assert check_value("document", str(outbox / "near.txt"), [outbox]) == str(outbox / "near.txt")
    assert check_value("document", str(out / "ok.txt"), [out, outbox]) == str(out / "ok.txt")


@pytest.mark.unit
def test_the_directory_itself_a_missing_file_and_a_nul_are_refused(tree):
    out = tree["out"]
    refused("document", str(out), [out])
    refused("document", str(out / "sub"), [out], "regular file")
    refused("document", f"{out}/sub/../../outbox/missing.txt", [out])
    refused("document", str(tree["root"] / "missing.txt"), [out])  # outside, whether or not
    # missing inside: the Bot API's "file not found", as for any missing file
    assert check_value("document", str(out / "missing.txt"), [out]) == str(out / "missing.txt")
    refused("document", f"file://{out}/ok.txt%00.png", [out], "NUL")
    refused("document", "/etc/passwd", [], "none configured")


@pytest.mark.unit
def test_a_symlink_the_gateway_cannot_look_up_is_refused(tree):
    out = tree["out"]
    (out / "loop").symlink_to(out / "loop")
    refused("document", str(out / "loop"), [out], "cannot look this path up")
    (out / "dangling").symlink_to(tree["root"] / "not-yet" / "passwd")
    refused("document", str(out / "dangling"), [out])
    if os.geteuid() != 0:  # root searches any directory
        hidden = out / "hidden"
        hidden.mkdir()
        (hidden / "link").symlink_to(tree["secret"])
        hidden.chmod(0o000)
        try:
            refused("document", str(hidden / "link"), [out], "cannot look this path up")
        finally:
            hidden.chmod(0o700)


@pytest.mark.unit
def test_a_configured_directory_that_is_a_symlink_counts_as_its_target(tree):
    link = tree["root"] / "link-to-out"
    link.symlink_to(tree["out"])
    assert check_value("document", str(link / "ok.txt"), [link]) == str(tree["out"] / "ok.txt")
    assert check_value("document", str(tree["out"] / "ok.txt"), [link])


@pytest.mark.unit
def test_every_input_file_parameter_and_nested_media_is_checked(tree):
    out, secret = tree["out"], tree["secret"]
    good, bad = str(out / "ok.txt"), f"file://{secret}"

    def fails(params: dict, field: str) -> None:
        with pytest.raises(InvalidRequest) as info:
            check_params(params, [out])
        assert info.value.field == field, str(info.value)
        assert "GATEWAY_MEDIA_DIRS" in str(info.value)

    for name in ("photo", "document", "audio", "video", "voice", "animation", "video_note"):
        fails({"chat_id": 1, name: bad}, name)
    for name in ("sticker", "thumbnail", "thumb", "cover"):
        fails({"chat_id": 1, "document": good, name: bad}, name)
    album = [{"type": "document", "media": good}, {"type": "document", "media": bad}]
    fails({"chat_id": 1, "media": album}, "media[1].media")
    fails({"chat_id": 1, "media": json.dumps(album)}, "media[1].media")  # JSON text
    fails(
        {"chat_id": 1, "media": [{"type": "video", "media": good, "cover": bad}]}, "media[0].cover"
    )
    fails(
        {"chat_id": 1, "media": [{"type": "audio", "media": good, "thumbnail": bad}]},
        "media[0].thumbnail",
    )
    fails({"chat_id": 1, "message_id": 2, "media": {"type": "photo", "media": bad}}, "media.media")
    fails(
        {"chat_id": 1, "message_id": 2, "media": json.dumps({"type": "photo", "media": bad})},
        "media.media",
    )
    options = [{"text": "a", "media": {"type": "photo", "media": bad}}]
    fails({"chat_id": 1, "question": "q", "options": json.dumps(options)}, "options[0].media.media")
    # nothing local, or local inside: passes; text that looks like a path is just text
    check_params(
        {
            "chat_id": 1,
            "text": f"file://{secret}",
            "caption": str(secret),
            "media": [{"type": "photo", "media": good, "caption": str(secret)}],
        },
        [out],
    )


@pytest.mark.unit
def test_send_plans_the_checked_value(tree):
    out = tree["out"]
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKENS": fake_token(11),
            "GATEWAY_API_TOKEN": "t" * 20,
            "GATEWAY_MEDIA_DIRS": f"{tree['outbox']}:{out}",
        }
    )
    p = plan({"chat_id": 1, "document": str(out / "a b%.txt")}, settings)
    assert p.parts[0]["document"] == f"file://{out}/a%20b%25.txt"
    p = plan({"chat_id": 1, "document": f"file://localhost{out}/ok.txt"}, settings)
    assert p.parts[0]["document"] == f"file://localhost{out}/ok.txt"
    with pytest.raises(InvalidRequest, match=r"^photo: .*GATEWAY_MEDIA_DIRS"):
        plan({"chat_id": 1, "photo": str(tree["secret"])}, settings)


@pytest.mark.unit
def test_media_dirs_and_api_dir_settings(tmp_path):
    base = {"TELEGRAM_BOT_TOKENS": fake_token(11), "GATEWAY_API_TOKEN": "t" * 20}
    default = load_settings(base)
    assert default.media_dirs == (Path("/var/lib/telegram-gateway/outbox"),)
    assert default.telegram_api_dir == Path("/var/lib/telegram-bot-api")
    moved = load_settings({**base, "GATEWAY_STATE_DIR": str(tmp_path)})
    assert moved.media_dirs == (tmp_path / "outbox",)
    several = load_settings({**base, "GATEWAY_MEDIA_DIRS": "/srv/a/:/srv/b::/srv/a"})
    assert several.media_dirs == (Path("/srv/a"), Path("/srv/b"))
    assert load_settings({**base, "TELEGRAM_API_DIR": "/srv/bot-api/"}).telegram_api_dir == Path(
        "/srv/bot-api"
    )
    for name, value in (
        ("GATEWAY_MEDIA_DIRS", "/srv/a:relative/b"),
        ("GATEWAY_MEDIA_DIRS", "outbox"),
        ("TELEGRAM_API_DIR", "var/lib/telegram-bot-api"),
    ):
        with pytest.raises(ConfigError) as info:
            load_settings({**base, name: value})
        assert name in str(info.value) and "absolute" in str(info.value)
    with pytest.raises(ConfigError, match="GATEWAY_MEDIA_DIRS entry 2 is the root directory"):
        load_settings({**base, "GATEWAY_MEDIA_DIRS": "/srv/a:/"})


# ---- integration: a running gateway ------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    allowed = root / "allowed"
    allowed.mkdir()
    with outbound_stack(root, workers=1, GATEWAY_MEDIA_DIRS=str(allowed)) as stack:
        stack.allowed = allowed  # type: ignore[attr-defined]
        yield stack


def chat(index: int) -> int:
    return PRIVATE[60 + index]


def nothing_sent(stack, chat_id: int) -> None:
    assert stack.sent(chat_id) == [], "the emulator received something"


@pytest.mark.integration
@pytest.mark.parametrize(
    "value",
    ["/etc/passwd", "file:///etc/passwd", "file://localhost/etc/passwd", "file:///etc/%70asswd"],
)
def test_send_json_refuses_a_file_outside(media, value):
    status, answer, _ = media.send({"bot": BOT, "chat_id": chat(0), "document": value})
    assert status == 400, answer
    assert answer["error"].startswith("document: ") and "GATEWAY_MEDIA_DIRS" in answer["error"]
    nothing_sent(media, chat(0))


@pytest.mark.integration
def test_send_json_refuses_a_symlink_out_of_the_directory(media):
    link = media.allowed / f"passwd-{secrets.token_hex(4)}"
    link.symlink_to("/etc/passwd")
    status, answer, _ = media.send({"bot": BOT, "chat_id": chat(1), "photo": str(link)})
    assert status == 400 and "GATEWAY_MEDIA_DIRS" in answer["error"], answer
    nothing_sent(media, chat(1))


@pytest.mark.integration
def test_send_multipart_form_field_refuses_a_file_outside(media):
    boundary = "----media" + secrets.token_hex(8)
    fields = {"bot": str(BOT), "chat_id": str(chat(2)), "document": "/etc/passwd"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += f"--{boundary}--\r\n".encode()
    status, answer, _ = media.send_raw(body, f"multipart/form-data; boundary={boundary}")
    assert status == 400, answer
    assert answer["error"].startswith("document: ") and "GATEWAY_MEDIA_DIRS" in answer["error"]
    nothing_sent(media, chat(2))


@pytest.mark.integration
def test_send_json_sends_an_allowed_file(media):
    path = media.allowed / "report 1.txt"
    content = os.urandom(2048)
    path.write_bytes(content)
    status, answer, _ = media.send({"bot": BOT, "chat_id": chat(3), "document": str(path)})
    assert status == 200, answer
    document = answer["result"][0]["document"]
    assert document["file_size"] == len(content) and document["file_name"] == "report 1.txt"
    assert media.sent(chat(3))[-1]["params"]["document"].endswith("/report%201.txt")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("sendDocument", {"document": "/etc/passwd"}, "document"),
        ("sendDocument", {"document": "file:///etc/passwd"}, "document"),
        ("sendPhoto", {"photo": "file://localhost/etc/passwd"}, "photo"),
        (
            "sendDocument",
            {"document": "BQACAgIAAxkBAAIB", "thumbnail": "file:///etc/passwd"},
            "thumbnail",
        ),
        (
            "sendMediaGroup",
            {"media": [{"type": "document", "media": "file:///etc/passwd"}]},
            "media[0].media",
        ),
        (
            "sendMediaGroup",
            {"media": json.dumps([{"type": "document", "media": "/etc/passwd"}])},
            "media[0].media",
        ),
        (
            "editMessageMedia",
            {"message_id": 1, "media": {"type": "document", "media": "file:///etc/passwd"}},
            "media.media",
        ),
    ],
)
def test_nats_refuses_a_file_outside(media, method, params, field):
    answer = media.request(f"telegram.out.{BOT}.{method}", {"chat_id": chat(4), **params})
    assert answer["ok"] is False and answer["error_code"] == 400, answer
    assert answer["description"].startswith(f"Bad Request: {field}: "), answer
    assert "GATEWAY_MEDIA_DIRS" in answer["description"]
    nothing_sent(media, chat(4))


@pytest.mark.integration
def test_nats_sends_allowed_files(media):
    one, two = media.allowed / "one.txt", media.allowed / "two.txt"
    one.write_bytes(b"first file")
    two.write_bytes(b"second file!")
    answer = media.request(
        f"telegram.out.{BOT}.sendDocument", {"chat_id": chat(5), "document": f"file://{one}"}
    )
    assert answer["ok"] is True, answer
    assert answer["result"]["document"]["file_size"] == len(b"first file")
    album = [
        {"type": "document", "media": f"file://{one}"},
        {"type": "document", "media": f"file://localhost{two}"},
    ]
    answer = media.request(
        f"telegram.out.{BOT}.sendMediaGroup", {"chat_id": chat(6), "media": album}, timeout=30
    )
    assert answer["ok"] is True, answer
    sizes = [message["document"]["file_size"] for message in answer["result"]]
    assert sizes == [len(b"first file"), len(b"second file!")]
