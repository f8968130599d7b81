"""Received files: injected media and ``getFile`` in the real server's layout and modes.

The real server (``--local``) downloads a received file into ``<dir>/<bot id>:<secret>/
<kind folder>/file_<n>.<ext>`` (``~`` for ``:`` where the file system refuses a colon) with
tdlib's modes (file 0640, folders 0750, under the umask) and answers that absolute path;
without ``--local`` the path relative to the bot's folder, served by
``/file/bot<token>/<path>``. Sources: tests/emulator/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from botapi_emulator import received
from botapi_emulator.cli import Options
from botapi_emulator.emulator import Emulator
from botapi_emulator.errors import ApiError, ControlError
from botapi_emulator.persistence import restore, snapshot
from botapi_emulator.protocol import Response
from harness.emulator import BotHandle, EmulatorProcess, raw_request
from harness.tokens import fake_token

PRIVATE = 4242
GROUP = -555
CHANNEL = -1002000000001
# kind -> (bytes, file_name, mime_type, expected folder, expected extension)
SAMPLES: dict[str, tuple[bytes, str | None, str | None, str, str]] = {
    "photo": (b"\xff\xd8\xff\xe0photo-bytes", None, None, "photos", ".jpg"),
    "voice": (b"OggS\x00voice-bytes", None, None, "voice", ".oga"),
    "document": (b"%PDF-1.4 report", "report.pdf", None, "documents", ".pdf"),
    "video": (b"\x00\x00\x00\x18ftypmp42", "clip.mp4", "video/mp4", "videos", ".mp4"),
    "audio": (b"ID3\x03song", "song.mp3", "audio/mpeg", "music", ".mp3"),
}


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture
def umask() -> Iterator[int]:
    """The process umask, restored after the test (tests below set their own)."""
    mask = current_umask()
    yield mask
    os.umask(mask)


# ------------------------------------------------------------------ unit -------------
def in_process(tmp_path: Path, local: bool = True) -> tuple[Emulator, Any, str]:
    opts = Options(api_id=1, api_hash="h", local=local, dir=str(tmp_path))
    emu = Emulator(opts, str(tmp_path / "temp"), None)
    token = fake_token(31337)
    return emu, emu.register_bot(token), token


def inject(emu: Emulator, bot: Any, sample: str, chat_id: int = PRIVATE, **spec: Any) -> dict:
    """Inject SAMPLES[sample]; ``spec`` overrides any field of the control call's body."""
    data, name, mime, _, _ = SAMPLES[sample]
    body = {"kind": sample, "data": base64.b64encode(data).decode(), "chat_id": chat_id}
    body.update({"file_name": name, "mime_type": mime, **spec})

    async def run() -> dict[str, Any]:
        return received.inject_file(emu, bot, body)

    return asyncio.run(run())


def get_path(emu: Emulator, bot: Any, file_id: str) -> str:
    response = received.get_file(emu, bot, {"file_id": file_id})
    assert isinstance(response, Response) and response.status == 200
    return json.loads(response.body)["result"]["file_path"]


@pytest.mark.unit
class TestReceivedUnit:
    def test_folder_names_are_tdlibs(self) -> None:
        # td/telegram/files/FileType.cpp, get_file_type_name()
        assert received.KIND_FOLDERS == {
            "photo": "photos",
            "voice": "voice",
            "document": "documents",
            "video": "videos",
            "audio": "music",
        }

    def test_one_counter_per_bot_across_folders(self, tmp_path: Path, umask: int) -> None:
        emu, bot, token = in_process(tmp_path)
        bot_dir = tmp_path.resolve() / token  # Linux file systems take the colon
        paths = [get_path(emu, bot, inject(emu, bot, kind)["file_id"]) for kind in SAMPLES]
        expected = [
            str(bot_dir / folder / f"file_{n}{ext}")
            for n, (_, _, _, folder, ext) in enumerate(SAMPLES.values())
        ]
        assert paths == expected
        for path, (data, *_rest) in zip(paths, SAMPLES.values(), strict=True):
            assert Path(path).read_bytes() == data
        assert sorted(os.listdir(bot_dir / "temp")) == []  # renamed away, as tdlib does

    @pytest.mark.parametrize("mask", [0o022, 0o077])
    def test_modes_are_tdlibs_under_the_umask(self, tmp_path: Path, umask: int, mask: int) -> None:
        os.umask(mask)
        emu, bot, _ = in_process(tmp_path)
        path = Path(get_path(emu, bot, inject(emu, bot, "document")["file_id"]))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~mask
        for folder in (path.parent, path.parent.parent, path.parent.parent / "temp"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o750 & ~mask, folder

    def test_colon_probe_and_the_tilde_fallback(self, tmp_path: Path) -> None:
        emu, bot, token = in_process(tmp_path)
        assert received.colon_allowed(str(tmp_path)) is True
        assert os.listdir(tmp_path) == []  # the probe leaves nothing behind
        assert not received.colon_allowed(str(tmp_path / "missing"))
        assert received.bot_directory(emu, bot) == str(tmp_path.resolve() / token)
        emu.allow_colon_in_filenames = False
        bot_id, _, secret = token.partition(":")
        assert received.bot_directory(emu, bot) == str(tmp_path.resolve() / f"{bot_id}~{secret}")
        path = get_path(emu, bot, inject(emu, bot, "document")["file_id"])
        assert path == str(tmp_path.resolve() / f"{bot_id}~{secret}" / "documents" / "file_0.pdf")

    def test_same_path_again_and_a_new_one_when_deleted(self, tmp_path: Path) -> None:
        emu, bot, _ = in_process(tmp_path)
        file_id = inject(emu, bot, "voice")["file_id"]
        first = get_path(emu, bot, file_id)
        assert get_path(emu, bot, file_id) == first
        os.unlink(first)
        again = get_path(emu, bot, file_id)
        assert again != first and again.endswith("/voice/file_1.oga")
        assert Path(again).read_bytes() == SAMPLES["voice"][0]

    def test_errors(self, tmp_path: Path) -> None:
        emu, bot, _ = in_process(tmp_path)
        other = emu.register_bot(fake_token(4711))
        file_id = inject(emu, bot, "photo")["file_id"]
        cases = [
            ({"file_id": ""}, "Bad Request: file_id not specified"),
            ({}, "Bad Request: file_id not specified"),
            ({"file_id": "AgAC" + "x" * 40}, "Bad Request: invalid file_id"),
        ]
        for params, description in cases:
            with pytest.raises(ApiError) as caught:
                received.get_file(emu, bot, params)
            assert (caught.value.code, caught.value.description) == (400, description)
        with pytest.raises(ApiError, match="invalid file_id"):  # file ids are per bot
            received.get_file(emu, other, {"file_id": file_id})
        for bad in ({"kind": "sticker"}, {"data": "***"}, {"data": ""}, {"chat_id": "x"}):
            with pytest.raises(ControlError):
                inject(emu, bot, "document", **bad)

    def test_media_objects(self, tmp_path: Path) -> None:
        emu, bot, _ = in_process(tmp_path)
        photo = inject(emu, bot, "photo", width=1280, height=720)["message"]
        assert photo["photo"] == [
            {
                "file_id": photo["photo"][0]["file_id"],
                "file_unique_id": photo["photo"][0]["file_unique_id"],
                "width": 1280,
                "height": 720,
                "file_size": len(SAMPLES["photo"][0]),
            }
        ]
        voice = inject(emu, bot, "voice", duration=3)["message"]["voice"]
        assert voice["mime_type"] == "audio/ogg" and voice["duration"] == 3
        assert "file_name" not in voice
        document = inject(emu, bot, "document", chat_id=GROUP)["message"]
        assert document["document"]["file_name"] == "report.pdf"
        assert document["document"]["mime_type"] == "application/pdf"
        assert document["chat"]["type"] == "group" and document["from"]["is_bot"] is False
        video = inject(emu, bot, "video")["message"]["video"]
        assert (video["width"], video["height"], video["duration"]) == (640, 360, 1)
        emu.register_chat(bot, {"id": CHANNEL, "type": "channel", "title": "News"})
        audio = inject(emu, bot, "audio", chat_id=CHANNEL, title="Song")
        assert bot.history_types[-1] == "channel_post"
        assert audio["message"]["audio"]["title"] == "Song"
        assert audio["message"]["sender_chat"]["id"] == CHANNEL

    def test_snapshot_restore_keeps_files_and_counters(self, tmp_path: Path) -> None:
        emu, bot, _ = in_process(tmp_path)
        kept = inject(emu, bot, "document")["file_id"]
        path = get_path(emu, bot, kept)
        fresh = inject(emu, bot, "audio")["file_id"]
        lines = b"".join(snapshot(emu)).split(b"\n")
        copy, _, _ = in_process(tmp_path)
        copy.bots.clear()
        restore(copy, lines)
        bot2 = copy.bots[bot.id]
        assert get_path(copy, bot2, kept) == path
        assert get_path(copy, bot2, fresh).endswith("/music/file_1.mp3")


# ------------------------------------------------------------------ integration ------
@pytest.mark.integration
class TestReceivedThroughTheProcess:
    def test_local_get_file_of_every_kind(self, bot: BotHandle) -> None:
        emu = bot.emu
        bot_dir = emu.bot_dir(bot.token)
        assert bot_dir == emu.dir.resolve() / bot.token  # this file system takes the colon
        mask = current_umask()  # the emulator inherits it
        for n, (kind, (data, name, mime, folder, ext)) in enumerate(SAMPLES.items()):
            injected = emu.inject_file(bot.token, kind, data, PRIVATE, name, mime)
            assert set(injected) >= {"update_id", "file_id", "file_unique_id"}
            update = bot.ok("getUpdates", offset=injected["update_id"], limit=1)[0]
            media = update["message"][kind]
            if kind == "photo":
                media = media[-1]
            assert media["file_id"] == injected["file_id"]
            assert media["file_unique_id"] == injected["file_unique_id"]
            info = bot.ok("getFile", file_id=injected["file_id"])
            assert info["file_size"] == len(data)
            path = Path(info["file_path"])
            assert path == bot_dir / folder / f"file_{n}{ext}", info
            assert path.read_bytes() == data
            assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~mask
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750 & ~mask
            assert bot.ok("getFile", file_id=injected["file_id"])["file_path"] == str(path)
        status, description, _ = bot.error("getFile", file_id="BQAC" + "A" * 40)
        assert (status, description) == (400, "Bad Request: invalid file_id")
        assert bot.error("getFile", file_id="")[1] == "Bad Request: file_id not specified"

    def test_non_local_mode_answers_the_relative_path(self, tmp_path: Path) -> None:
        with EmulatorProcess(tmp_path, local=False) as emu:
            handle = BotHandle.register(emu)
            data, name, mime, _, _ = SAMPLES["document"]
            injected = emu.inject_file(handle.token, "document", data, PRIVATE, name, mime)
            info = handle.ok("getFile", file_id=injected["file_id"])
            assert info["file_path"] == "documents/file_0.pdf"
            assert (emu.bot_dir(handle.token) / info["file_path"]).read_bytes() == data
            status, _, body = raw_request(
                emu.port, "GET", f"/file/bot{handle.token}/{info['file_path']}"
            )
            assert (status, body) == (200, data)
            other = BotHandle.register(emu)
            assert (
                raw_request(emu.port, "GET", f"/file/bot{other.token}/documents/file_0.pdf")[0]
                == 404
            )

    def test_received_files_survive_a_restart(self, tmp_path: Path) -> None:
        with EmulatorProcess(tmp_path) as emu:
            handle = BotHandle.register(emu)
            data, name, mime, _, _ = SAMPLES["document"]
            first = emu.inject_file(handle.token, "document", data, PRIVATE, name, mime)
            path = handle.ok("getFile", file_id=first["file_id"])["file_path"]
            second = emu.inject_file(handle.token, "voice", b"OggS later", PRIVATE)
            emu.restart(kill=True)
            assert handle.ok("getFile", file_id=first["file_id"])["file_path"] == path
            later = handle.ok("getFile", file_id=second["file_id"])["file_path"]
            assert later == str(emu.bot_dir(handle.token) / "voice" / "file_1.oga")
            assert Path(later).read_bytes() == b"OggS later"
