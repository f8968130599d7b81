"""Versions, limits and the error texts the real server answers with."""

from __future__ import annotations

API_VERSION = "10.0"
EMULATOR_VERSION = "1.0"
JOURNAL_NAME = "botapi-emulator.journal"
MAX_HEADER_BYTES = 64 * 1024
UPLOAD_LIMIT_LOCAL = 2000 * 1024 * 1024
UPLOAD_LIMIT_REMOTE = 50 * 1024 * 1024
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_BOT_ID = 1 << 54

CONFLICT_OTHER_POLLER = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
CONFLICT_SET_WEBHOOK = "Conflict: terminated by setWebhook request"
RESTART_DESCRIPTION = "Internal Server Error: restart"
# close is refused (429) this many seconds after an instance launched (Client::on_cmd)
CLOSE_AFTER = 10 * 60
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"

HTTP_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
