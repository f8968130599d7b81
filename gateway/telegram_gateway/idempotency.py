"""``Idempotency-Key``: a retried request gets the first one's result instead of a second send.

The store is one sqlite3 database in WAL mode, ``<GATEWAY_STATE_DIR>/idempotency.sqlite3``,
shared by every worker on the host and surviving restarts. A key moves through:

``pending``  claimed by the request that is executing it (with a lease: how long that request
             can take at most); a duplicate arriving now waits for the outcome (polling the
             row cooperatively) instead of sending again
``done``     the outcome (HTTP status, headers, body) is stored for ``GATEWAY_IDEMPOTENCY_TTL``
             seconds and replayed to every retry with the same key
(deleted)    the request never reached Telegram (refused by the pacing limit, Bot API
             unreachable, ...): the key is released so that a retry really sends

A key reused with a *different* request is refused (422), so a client bug cannot silently
return the wrong message. A ``pending`` row whose lease ran out belongs to a worker that died
mid-request: whether Telegram got the message is unknown, so the key answers 409 until it
expires rather than risk a second copy.

Under gevent every sqlite3 call blocks the worker's hub, so they are kept tiny (one short
transaction each, ``synchronous=NORMAL``), the connection has no busy timeout (sqlite would
sleep *blocking*), and a locked database is retried here with a cooperative sleep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram_gateway.errors import IdempotencyUnavailable

logger = logging.getLogger(__name__)


def fingerprint(source: dict[str, Any]) -> str:
    """The one recipe, for ``/send`` and NATS alike: sha256 of the request as canonical JSON
    (keys sorted at every depth, no whitespace, UTF-8), so that a retry whose JSON lists the
    same parameters in another order is the same request."""
    canonical = json.dumps(source, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


KEY_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
POLL_INTERVAL = 0.05  # how often a duplicate looks whether the first request finished
BUSY_RETRY = 0.002  # first sleep when the database is locked; doubles up to 50 ms
BUSY_LIMIT = 5.0  # seconds of "database is locked" before giving up (503)
PURGE_EVERY = 60.0  # seconds between two deletions of expired keys (per process)

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires);
"""


@dataclass
class Outcome:
    """A response to store and replay. ``store``: Telegram may have acted on the request, keep
    the outcome for the key; False releases the key (nothing was sent: a retry may send)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    store: bool = True


def valid_key(key: str) -> bool:
    return bool(KEY_RE.match(key))


class IdempotencyStore:
    def __init__(
        self,
        path: Path,
        ttl: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.clock = clock
        self.sleep = sleep
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # gevent-patched in workers: cooperative
        self._last_purge = 0.0

    def run(
        self,
        key: str,
        fingerprint: str,
        compute: Callable[[], Outcome],
        lease: float,
    ) -> tuple[Outcome, bool]:
        """The outcome for ``key``: computed now (``compute`` runs at most once per key across
        all workers), or the stored one. Returns ``(outcome, replayed)``."""
        deadline = time.monotonic() + lease
        while True:
            claim = self._claim(key, fingerprint, lease)
            if isinstance(claim, Outcome):
                return claim, True
            if claim == "new":
                break
            if claim == "mismatch":
                return _error(422, "Idempotency-Key: already used for a different request"), False
            if claim == "abandoned":
                return (
                    _error(
                        409,
                        "Idempotency-Key: the first request with this key was interrupted "
                        "(the gateway restarted while it was sending); whether Telegram got "
                        "the message is unknown. Check the chat; retry with a new key if needed",
                    ),
                    False,
                )
            if time.monotonic() > deadline:
                return (
                    _error(409, "Idempotency-Key: a request with this key is still in flight"),
                    False,
                )
            self.sleep(POLL_INTERVAL)
        try:
            outcome = compute()
        except BaseException:
            self._release(key)
            raise
        if outcome.store:
            self._finish(key, outcome)
        else:
            self._release(key)
        return outcome, False

    # ---- one short transaction each ------------------------------------------------------
    def _claim(self, key: str, fingerprint: str, lease: float) -> str | Outcome:
        def claim(db: sqlite3.Connection) -> str | Outcome:
            now = self.clock()
            row = db.execute(
                "SELECT fingerprint, state, status, headers, body, expires, lease_until "
                "FROM idempotency WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None or row[5] <= now:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency "
                    "(key, fingerprint, state, created, expires, lease_until) "
                    "VALUES (?, ?, 'pending', ?, ?, ?)",
                    (key, fingerprint, now, now + self.ttl, now + lease),
                )
                return "new"
            if row[0] != fingerprint:
                return "mismatch"
            if row[1] == "done":
                return Outcome(
                    status=int(row[2]), headers=json.loads(row[3]), body=json.loads(row[4])
                )
            return "in-flight" if (row[6] or 0) > now else "abandoned"

        return self._transaction(claim)

    def _finish(self, key: str, outcome: Outcome) -> None:
        body = json.dumps(outcome.body, ensure_ascii=False, separators=(",", ":"))

        def finish(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE idempotency SET state = 'done', status = ?, headers = ?, body = ?, "
                "lease_until = NULL WHERE key = ?",
                (outcome.status, json.dumps(outcome.headers), body, key),
            )

        try:
            self._transaction(finish)
        except IdempotencyUnavailable as exc:  # the message went out; say so, keep going
            logger.error("could not store the outcome for an Idempotency-Key: %s", exc)

    def _release(self, key: str) -> None:
        try:
            self._transaction(
                lambda db: db.execute(
                    "DELETE FROM idempotency WHERE key = ? AND state = 'pending'", (key,)
                )
            )
        except IdempotencyUnavailable as exc:
            logger.error("could not release an Idempotency-Key: %s", exc)

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        delay = BUSY_RETRY
        give_up = time.monotonic() + BUSY_LIMIT
        while True:
            with self._lock:
                try:
                    db = self._connection()
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(db)
                        self._maybe_purge(db)
                        db.execute("COMMIT")
                        return result
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > give_up:
                        raise IdempotencyUnavailable(
                            f"the idempotency store {self.path} is not usable ({exc}); "
                            "check GATEWAY_STATE_DIR is writable"
                        ) from None
            self.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _maybe_purge(self, db: sqlite3.Connection) -> None:
        now = self.clock()
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            db.execute("DELETE FROM idempotency WHERE expires <= ?", (now,))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            db = sqlite3.connect(
                str(self.path), timeout=0, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _error(status: int, message: str) -> Outcome:
    return Outcome(status=status, body={"ok": False, "error": message}, store=False)
