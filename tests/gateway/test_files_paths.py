"""Which received files the gateway reads (only inside the bot's own folder under
TELEGRAM_API_DIR, the descriptor checked again), which files of an update ``store_files``
stores, and the settings that bound the Object Store. No process is started."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness.tokens import fake_token
from telegram_gateway.config import load_settings
from telegram_gateway.errors import ConfigError
from telegram_gateway.files import FileProblem, ReceivedFile, ReceivedFiles, files_of

pytestmark = pytest.mark.unit

BOT_ID, OTHER_ID = 820000001, 820000002
TOKEN, OTHER_TOKEN = fake_token(BOT_ID), fake_token(OTHER_ID)  # random: made once


def files_for(api_dir: Path) -> tuple[ReceivedFiles, Any]:
    env = {
        "TELEGRAM_BOT_TOKENS": f"{TOKEN},{OTHER_TOKEN}",
        "GATEWAY_API_TOKEN": "x" * 24,
        "TELEGRAM_API_DIR": str(api_dir),
    }
    settings = load_settings(env)
    return ReceivedFiles(settings, bus=None, clients={}), settings  # type: ignore[arg-type]


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """An api dir with both bots' folders (the ':' form) and a file in each, plus a file
    outside."""
    api = tmp_path / "telegram-bot-api"
    mine = api / TOKEN / "documents"
    other = api / OTHER_TOKEN / "documents"
    for folder in (mine, other):
        folder.mkdir(parents=True)
        (folder / "file_0.pdf").write_bytes(b"%PDF " + folder.parent.name[:3].encode())
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    return {"api": api, "mine": mine, "other": other, "outside": outside}


def check(files: ReceivedFiles, settings: Any, served: str) -> Path:
    return files._inside_bot_folder(settings.bots[0], served)


def test_a_file_inside_the_bots_folder_is_read_absolute_or_relative(tree):
    files, settings = files_for(tree["api"])
    real = (tree["mine"] / "file_0.pdf").resolve()
    assert check(files, settings, str(tree["mine"] / "file_0.pdf")) == real
    assert check(files, settings, "documents/file_0.pdf") == real


def test_the_tilde_form_of_the_folder_is_the_bots_folder_too(tmp_path):
    api = tmp_path / "api"
    folder = api / TOKEN.replace(":", "~") / "voice"
    folder.mkdir(parents=True)
    (folder / "file_1.oga").write_bytes(b"OggS")
    files, settings = files_for(api)
    assert check(files, settings, "voice/file_1.oga") == (folder / "file_1.oga").resolve()
    assert check(files, settings, str(folder / "file_1.oga")) == (folder / "file_1.oga").resolve()


@pytest.mark.parametrize(
    "served",
    [
        "{outside}",
        "/etc/passwd",
        "{api}/../outside.txt",
        "{mine}/../../" + OTHER_TOKEN + "/documents/file_0.pdf",
        "{other}/file_0.pdf",
        "../../outside.txt",
        "{api}",
        "{mine}/..",
    ],
    ids=[
        "outside",
        "passwd",
        "dotdot",
        "into-other-bot",
        "other-bot",
        "relative-up",
        "api",
        "folder",
    ],
)
def test_anything_outside_the_bots_own_folder_is_403(tree, served):
    files, settings = files_for(tree["api"])
    path = served.format(**{k: str(v) for k, v in tree.items()})
    with pytest.raises(FileProblem) as refused:
        check(files, settings, path)
    assert refused.value.status == 403
    assert "TELEGRAM_API_DIR" in refused.value.description


def test_a_bot_folder_that_is_a_link_out_of_the_api_dir_is_refused(tmp_path):
    api = tmp_path / "api"
    api.mkdir()
    elsewhere = tmp_path / "elsewhere" / "documents"
    elsewhere.mkdir(parents=True)
    (elsewhere / "file_0.pdf").write_bytes(b"x")
    (api / TOKEN).symlink_to(elsewhere.parent)
    files, settings = files_for(api)
    with pytest.raises(FileProblem) as refused:
        check(files, settings, "documents/file_0.pdf")
    assert refused.value.status == 403


def test_the_api_dir_itself_may_be_a_link(tmp_path, tree):
    link = tmp_path / "link-to-api"
    link.symlink_to(tree["api"])
    files, settings = files_for(link)
    assert check(files, settings, "documents/file_0.pdf").read_bytes().startswith(b"%PDF")


def received(path: Path) -> ReceivedFile:
    return ReceivedFile("id", "uid", "documents/x", path)


def test_open_refuses_a_final_symlink_and_anything_but_a_regular_file(tree):
    files, _ = files_for(tree["api"])
    link = tree["mine"] / "file_9.pdf"
    link.symlink_to(tree["mine"] / "file_0.pdf")
    with pytest.raises(FileProblem) as refused:
        files.open(received(link))
    assert refused.value.status == 403
    with pytest.raises(FileProblem) as refused:
        files.open(received(tree["mine"]))
    assert refused.value.status == 403
    reader, size = files.open(received(tree["mine"] / "file_0.pdf"))
    with reader:
        assert reader.read() == (tree["mine"] / "file_0.pdf").read_bytes()
    assert size == (tree["mine"] / "file_0.pdf").stat().st_size


def test_open_of_a_vanished_file_is_502_and_leaks_no_descriptor(tree):
    files, _ = files_for(tree["api"])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(FileProblem) as refused:
            files.open(received(tree["mine"] / "gone.pdf"))
        assert refused.value.status == 502
        with pytest.raises(FileProblem):
            files.open(received(tree["mine"]))
    assert len(os.listdir("/proc/self/fd")) <= before


def photo(file_id: str, size: int, width: int) -> dict[str, Any]:
    return {"file_id": file_id, "file_unique_id": file_id + "u", "file_size": size, "width": width}


def test_files_of_an_update():
    assert files_of({"update_id": 1, "message": {"text": "no file"}}) == []
    assert files_of({"update_id": 1, "callback_query": {"id": "1"}}) == []
    sizes = [photo("small", 100, 90), photo("large", 9000, 1280), photo("mid", 900, 320)]
    assert files_of({"message": {"photo": sizes, "caption": "c"}}) == ["large"]
    assert files_of({"edited_message": {"document": {"file_id": "doc"}}}) == ["doc"]
    assert files_of({"channel_post": {"voice": {"file_id": "v"}}}) == ["v"]
    assert files_of({"business_message": {"video_note": {"file_id": "n"}}}) == ["n"]
    both = {"message": {"animation": {"file_id": "a"}, "document": {"file_id": "a"}}}
    assert files_of(both) == ["a"]
    assert files_of({"message": {"photo": "not a list", "document": "nor a dict"}}) == []


def test_the_bucket_must_hold_the_largest_file():
    env = {
        "TELEGRAM_BOT_TOKENS": TOKEN,
        "GATEWAY_API_TOKEN": "x" * 24,
        "GATEWAY_FILES_MAX_BYTES": str(3 * 1024**2),
        "GATEWAY_FILES_BUCKET_MAX_BYTES": str(2 * 1024**2),
    }
    with pytest.raises(ConfigError) as problem:
        load_settings(env)
    assert "GATEWAY_FILES_BUCKET_MAX_BYTES must be at least GATEWAY_FILES_MAX_BYTES" in str(
        problem.value
    )
    with pytest.raises(ConfigError, match="GATEWAY_FILES_TTL must be between"):
        load_settings(
            {**env, "GATEWAY_FILES_BUCKET_MAX_BYTES": str(4 * 1024**2), "GATEWAY_FILES_TTL": "5"}
        )
    settings = load_settings({"TELEGRAM_BOT_TOKENS": TOKEN, "GATEWAY_API_TOKEN": "x" * 24})
    assert (settings.files_max_bytes, settings.files_ttl, settings.files_bucket_max_bytes) == (
        100 * 1024**2,
        86400,
        1024**3,
    )
