"""``Idempotency-Key``: a retried request gets the first one's result instead of a second send.

The store is the NATS JetStream Key-Value bucket ``TELEGRAM_IDEMPOTENCY``
(:data:`IDEMPOTENCY_BUCKET`), created by the :class:`~telegram_gateway.bus.Bus` on every
connect (file storage, one revision per key). Every worker on every host that uses the same
NATS shares it, and it survives gateway restarts (and nats-server restarts: file storage).
Only methods that change something are remembered: the callers skip reading methods, which
may simply run twice.

Keys: an ``Idempotency-Key`` may hold any printable ASCII, a Key-Value key only
``[-/_=.a-zA-Z0-9]``, so an entry's key is ``k.`` + the sha256 hex of the Idempotency-Key as
the caller namespaced it (``http:<key>`` / ``nats:<key>``). Values are compact JSON. A key
moves through:

``pending``  ``{"fp", "state": "pending", "lease_until"}``: claimed (``create``, which only
             one request can win, on any worker or host) by the request executing it, with a
             lease (wall-clock time by which that request ends at the latest); a duplicate
             arriving now waits for the outcome (polling the entry every
             :data:`POLL_INTERVAL`, cooperatively) instead of sending again
``done``     ``{"fp", "state": "done", "status", "headers", "body"}``: the outcome, written
             over the claim (``update`` at the claim's revision) and replayed to every retry
             with the same key
(deleted)    the request never reached Telegram (refused by the pacing limit, Bot API
             unreachable, ...) or failed: the claim is deleted (at its revision) so that a
             retry really sends (its small delete marker stays until the TTL)

A key reused with a *different* request (another fingerprint) is refused (422), so a client
bug cannot silently return the wrong message. A ``pending`` entry whose lease ran out belongs
to a worker that died (or lost NATS) mid-request: whether Telegram got the message is unknown,
so the key answers 409 until it expires rather than risk a second copy (so does, rarely, a
claim whose ``create`` NATS stored but did not confirm in time: that request got 503). Leases
compare wall clocks, so hosts sharing the bucket need synchronised clocks (NTP).

Bounds, both enforced by the server (no purge loop here): an entry expires
``GATEWAY_IDEMPOTENCY_TTL`` after its last write (the bucket's max age), and the bucket holds
at most ``GATEWAY_IDEMPOTENCY_MAX_BYTES``. A full bucket discards new writes: a *new* key is
then refused (:class:`IdempotencyUnavailable`, 503) until old entries expire, while stored
outcomes still replay; an outcome that does not fit any more is logged and its key stays
``pending`` (409 once the lease is over). When NATS is unreachable or the bucket is not ready,
:meth:`IdempotencyStore.run` raises :class:`IdempotencyUnavailable` (callers answer 503) before
anything is sent; failing to store an outcome or release a key after the send is logged, not
raised (the answer still goes to the caller).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.js.api import KeyValueConfig, StorageType

from telegram_gateway.errors import (
    BusError,
    BusUnavailable,
    IdempotencyUnavailable,
    RevisionMismatch,
)

if TYPE_CHECKING:
    from telegram_gateway.bus import Bus

logger = logging.getLogger(__name__)

#: the Key-Value bucket of Idempotency-Keys (stream ``KV_TELEGRAM_IDEMPOTENCY``)
IDEMPOTENCY_BUCKET = "TELEGRAM_IDEMPOTENCY"
KEY_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
POLL_INTERVAL = 0.05  # how often a duplicate looks whether the first request finished
CLAIM_ATTEMPTS = 3  # create/read races in a row (the key vanishing between the two) per poll


def fingerprint(source: dict[str, Any]) -> str:
    """The one recipe, for ``/send`` and NATS alike: sha256 of the request as canonical JSON
    (keys sorted at every depth, no whitespace, UTF-8), so that a retry whose JSON lists the
    same parameters in another order is the same request."""
    canonical = json.dumps(source, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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


def entry_key(key: str) -> str:
    """The Key-Value key of an Idempotency-Key (any printable ASCII -> ``k.<sha256 hex>``)."""
    return "k." + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class _Claimed:
    revision: int


class IdempotencyStore:
    def __init__(
        self,
        bus: Bus,
        ttl: float,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bus = bus
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.clock = clock
        self.sleep = sleep
        bus.declare_bucket(
            KeyValueConfig(
                bucket=IDEMPOTENCY_BUCKET,
                description="Idempotency-Keys of /send and telegram.out: claims and outcomes",
                ttl=ttl,
                max_bytes=max_bytes,
                history=1,
                storage=StorageType.FILE,
            )
        )

    def run(
        self,
        key: str,
        fingerprint: str,
        compute: Callable[[], Outcome],
        lease: float,
    ) -> tuple[Outcome, bool]:
        """The outcome for ``key``: computed now (``compute`` runs at most once per key across
        all workers and hosts), or the stored one. Returns ``(outcome, replayed)``. Raises
        :class:`IdempotencyUnavailable` (nothing computed) when the bucket cannot be used."""
        name = entry_key(key)
        deadline = time.monotonic() + lease
        while True:
            claim = self._claim(name, fingerprint, lease)
            if isinstance(claim, _Claimed):
                break
            if isinstance(claim, Outcome):
                return claim, True
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
            self._release(name, claim.revision)
            raise
        if outcome.store:
            self._finish(name, claim.revision, fingerprint, outcome)
        else:
            self._release(name, claim.revision)
        return outcome, False

    # ---- one Key-Value operation each ------------------------------------------------------
    def _claim(self, name: str, fingerprint: str, lease: float) -> _Claimed | Outcome | str:
        """Claim ``name`` (:class:`_Claimed`), or what holds it: the stored :class:`Outcome`,
        ``"mismatch"``, ``"abandoned"`` or ``"in-flight"``."""
        if not self.bus.bucket_ready(IDEMPOTENCY_BUCKET):
            raise IdempotencyUnavailable(
                f"the Idempotency-Key store (NATS Key-Value bucket {IDEMPOTENCY_BUCKET}) is not "
                + (
                    "ready (see the gateway log: creating the bucket failed); retry later"
                    if self.bus.connected
                    else "reachable: not connected to NATS; retry later"
                )
            )
        for _ in range(CLAIM_ATTEMPTS):
            pending = {"fp": fingerprint, "state": "pending", "lease_until": self.clock() + lease}
            try:
                return _Claimed(self.bus.kv_create(IDEMPOTENCY_BUCKET, name, _encode(pending)))
            except RevisionMismatch:
                pass  # taken: see by whom
            except BusUnavailable as exc:
                raise _unavailable(exc) from None
            except BusError as exc:
                raise self._refused(exc) from None
            try:
                entry = self.bus.kv_get(IDEMPOTENCY_BUCKET, name)
            except BusError as exc:
                raise _unavailable(exc) from None
            if entry is None or entry.value is None:
                continue  # released or expired in between: claim again
            return self._holder(entry.value, fingerprint)
        return "in-flight"  # it keeps changing hands: look again after a pause

    def _refused(self, exc: BusError) -> IdempotencyUnavailable:
        if "maximum bytes" in str(exc):
            return IdempotencyUnavailable(
                f"the Idempotency-Key store (NATS Key-Value bucket {IDEMPOTENCY_BUCKET}) is full "
                f"(GATEWAY_IDEMPOTENCY_MAX_BYTES = {self.max_bytes} bytes): requests with a new "
                "Idempotency-Key are refused until older keys expire (GATEWAY_IDEMPOTENCY_TTL = "
                f"{self.ttl:g} s); stored answers still replay. Retry later, or raise the bound"
            )
        return IdempotencyUnavailable(
            f"the Idempotency-Key store (NATS Key-Value bucket {IDEMPOTENCY_BUCKET}) refused a new "
            f"key ({exc}); retry later"
        )

    def _holder(self, raw: bytes, fingerprint: str) -> Outcome | str:
        try:
            value = json.loads(raw)
            if value["fp"] != fingerprint:
                return "mismatch"
            if value["state"] == "done":
                return Outcome(
                    status=int(value["status"]),
                    headers=dict(value["headers"]),
                    body=dict(value["body"]),
                )
            return "in-flight" if float(value["lease_until"]) > self.clock() else "abandoned"
        except (ValueError, TypeError, KeyError) as exc:
            raise IdempotencyUnavailable(
                f"the Idempotency-Key store (NATS Key-Value bucket {IDEMPOTENCY_BUCKET}) holds "
                f"an entry the gateway cannot read ({type(exc).__name__}: {exc}); it expires "
                "after GATEWAY_IDEMPOTENCY_TTL"
            ) from None

    def _finish(self, name: str, revision: int, fingerprint: str, outcome: Outcome) -> None:
        done = {
            "fp": fingerprint,
            "state": "done",
            "status": outcome.status,
            "headers": outcome.headers,
            "body": outcome.body,
        }
        if not self.bus.connected:
            logger.error("could not store the outcome for an Idempotency-Key: NATS is down")
            return
        try:
            self.bus.kv_update(IDEMPOTENCY_BUCKET, name, _encode(done), last=revision)
        except RevisionMismatch:
            logger.error(
                "could not store the outcome for an Idempotency-Key: its claim expired "
                "(GATEWAY_IDEMPOTENCY_TTL shorter than the request) or was replaced"
            )
        except (BusError, TypeError, ValueError) as exc:  # the message went out; keep going
            logger.error("could not store the outcome for an Idempotency-Key: %s", exc)

    def _release(self, name: str, revision: int) -> None:
        if not self.bus.connected:
            logger.error("could not release an Idempotency-Key: NATS is down")
            return
        try:
            self.bus.kv_delete(IDEMPOTENCY_BUCKET, name, last=revision)
        except RevisionMismatch:
            logger.warning("an Idempotency-Key to release had expired or changed meanwhile")
        except BusError as exc:
            logger.error("could not release an Idempotency-Key: %s", exc)

    def close(self) -> None:
        """Nothing to close: the bucket belongs to the Bus."""


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _unavailable(exc: BusError) -> IdempotencyUnavailable:
    return IdempotencyUnavailable(
        f"the Idempotency-Key store (NATS Key-Value bucket {IDEMPOTENCY_BUCKET}) cannot be "
        f"used: {exc}; NATS may be unreachable, retry later"
    )


def _error(status: int, message: str) -> Outcome:
    return Outcome(status=status, body={"ok": False, "error": message}, store=False)
