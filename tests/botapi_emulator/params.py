"""Parameter access: strings from query / form / multipart, any JSON type from JSON."""

from __future__ import annotations

import json
import json.encoder
import math
from typing import Any

from botapi_emulator.errors import ApiError
from botapi_emulator.protocol import Params
from botapi_emulator.uploads import Upload


def p_str(params: Params, key: str) -> str | None:
    value = params.get(key)
    if value is None or isinstance(value, Upload):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def p_num(params: Params, key: str, default: float) -> float:
    value = params.get(key)
    if value is None or isinstance(value, bool | Upload | dict | list):
        return default
    try:
        return float(str(value).strip())
    except ValueError:
        return default


def p_int(params: Params, key: str, default: int = 0) -> int:
    number = p_num(params, key, float(default))
    return int(number) if math.isfinite(number) else default


def p_bool(params: Params, key: str) -> bool:
    value = params.get(key)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1") if value is not None else False


def p_json(params: Params, key: str, error: str) -> Any:
    value = params.get(key)
    if value is None or isinstance(value, dict | list):
        return value
    if isinstance(value, Upload):
        raise ApiError(400, error)
    text = str(value).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(400, error) from None
