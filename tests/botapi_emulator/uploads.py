"""Files: an upload received in a multipart request, and a file the emulator knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Upload:
    """A file part of a multipart request, saved under the temp dir."""

    field: str
    filename: str
    content_type: str
    path: str
    size: int
    sha256: str

    def describe(self) -> dict[str, Any]:
        return {
            "upload": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass
class FileInfo:
    file_id: str
    file_unique_id: str
    size: int
    name: str | None = None
    mime_type: str | None = None
    path: str | None = None  # a readable local file, when there is one
    # received files only (received.py): the media kind, the bot it was sent to, and
    # where the emulator keeps the sent bytes (``path`` is then the bot's downloaded copy)
    kind: str | None = None
    bot_id: int | None = None
    blob: str | None = None
