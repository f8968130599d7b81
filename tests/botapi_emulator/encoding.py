"""JSON as the real server writes it, UTF-16 lengths, Unix time."""

from __future__ import annotations

import json
import json.encoder
import time
from collections.abc import Callable
from typing import Any


def _not_serialisable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:  # the C encoder, built once: json.dumps() builds one per call
    _C_ENCODER: Callable[[Any, int], Any] | None = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _not_serialisable,
        json.encoder.c_encode_basestring,  # type: ignore[attr-defined]
        None,
        ":",
        ",",
        False,
        False,
        True,
    )
except (AttributeError, TypeError):  # pragma: no cover - pure-Python json
    _C_ENCODER = None


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as the real server writes it (non-ASCII as UTF-8)."""
    if _C_ENCODER is not None and isinstance(obj, dict | list):
        return "".join(_C_ENCODER(obj, 0)).encode("utf-8")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (what entity offsets count)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def now_unix() -> int:
    return int(time.time())
