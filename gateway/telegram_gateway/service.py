"""The gateway's moving parts, wired together once per worker process.

``Gateway`` owns the settings, the NATS bus, the Bot API client (one connection pool, one
:class:`BotApiClient` view per bot) and the background components (Bot API probe, pollers,
sender, ...). ``create_app`` builds it; gunicorn's ``post_worker_init`` hook starts it and
``worker_exit`` stops it, so nothing runs at import time and tests can build one without any
process around it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from telegram_gateway import SERVICE_NAME, metrics
from telegram_gateway.botapi import BotApi, BotApiClient
from telegram_gateway.bus import Bus
from telegram_gateway.config import Settings
from telegram_gateway.consumers import ConsumerService
from telegram_gateway.files import ReceivedFiles
from telegram_gateway.health import BotApiProbe, Check, Component
from telegram_gateway.idempotency import IdempotencyStore
from telegram_gateway.instances import Instances
from telegram_gateway.nats_api import OutboundService
from telegram_gateway.owner_sends import OwnerSends
from telegram_gateway.ownership import Ownership
from telegram_gateway.pacing import Pacer
from telegram_gateway.poller import Poller
from telegram_gateway.routing import load_routes
from telegram_gateway.sender import Sender
from telegram_gateway.slots import Slots

logger = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: Settings, bus: Bus | None = None) -> None:
        self.settings = settings
        self.bus = bus or Bus(settings)
        self.botapi = BotApi(settings.telegram_api_url)
        self.clients: dict[int, BotApiClient] = {
            bot.bot_id: BotApiClient(self.botapi, bot, settings.botapi_timeout)
            for bot in settings.bots
        }
        self.probe = BotApiProbe(
            list(self.clients.values()),
            settings.health_probe_interval,
            min(settings.botapi_timeout, 5.0),
        )
        self.components: list[Component] = [self.probe]
        self.started = False
        # which worker polls and paces each bot: leases in the TELEGRAM_OWNERS bucket (started
        # before the pollers, stopped after them)
        self.ownership = Ownership(settings, self.bus, list(self.clients))
        self.add(self.ownership)
        # inbound: the routing rules (a bad file is a ConfigError at start-up) and one poller
        # per bot; only the worker owning a bot polls, the others stand by
        self.router = load_routes(settings.routes_file, settings.bots)
        # received files for agents (telegram.files.<bot>.get, GET /files, store_files rules)
        self.files = ReceivedFiles(settings, self.bus, self.clients)
        self.pollers = {
            bot_id: Poller(
                settings, client, self.bus, self.router, files=self.files, ownership=self.ownership
            )
            for bot_id, client in self.clients.items()
        }
        for poller in self.pollers.values():
            self.add(poller)
        # this host's Bot API server instances: recorded before every request for a bot, and
        # drained and closed while the bot is polled on another host
        self.instances = Instances(
            settings, self.bus, self.ownership, self.clients, self.router, self.files
        )
        self.botapi.before = self.instances.ensure
        self.add(self.instances)
        # the probe asks only this host's server, and only for bots polled here (a request
        # launches an instance); the owner's record carries its outcome to the other hosts
        self.probe.local = self.instances.polled_here
        self.probe.remote = self.instances.owners_probe
        self.probe.on_result = self._note_probe
        # outbound: one sender per worker behind POST /send and telegram.out.<bot>.<method>;
        # each bot's owner paces it in its memory and sends for it (the other workers hand
        # their sends to it; an upload is sent where it arrived, with the owner's slots)
        self.slots = Slots(
            settings,
            self.bus,
            self.ownership,
            Pacer(
                settings.send_max_wait, settings.send_pacing, answer_within=settings.send_timeout
            ),
        )
        self.add(self.slots)
        self.owner_sends = OwnerSends(settings, self.bus, self.ownership)
        self.add(self.owner_sends)
        self.sender = Sender(settings, self.botapi, self.slots, self.owner_sends)
        self.idempotency = IdempotencyStore(
            self.bus, settings.idempotency_ttl, settings.idempotency_max_bytes
        )
        self.outbound = OutboundService(settings, self.bus, self.sender, self.idempotency)
        self.add(self.sender)
        self.add(self.outbound)
        # agents' durable pull consumers of the stream (telegram.consumers.create / .delete)
        self.add(ConsumerService(settings, self.bus))
        self.add(self.files)
        self.bus.on_state_change(lambda up: metrics.NATS_CONNECTED.set(1 if up else 0))

    def _note_probe(self, bot_id: int, check: Check) -> None:
        """The owner's probe outcome, in its record when it changes (not its timing)."""
        if not self.ownership.holds(bot_id):
            return
        reason = re.sub(r" in \d+ ms$", "", check.reason)
        if self.ownership.noted(bot_id) != {"api_ok": check.ok, "api_reason": reason}:
            self.ownership.note(bot_id, api_ok=check.ok, api_reason=reason)

    def add(self, component: Component) -> None:
        self.components.append(component)

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        metrics.NATS_CONNECTED.set(0)
        self.bus.start()
        for component in self.components:
            component.start()
        logger.info(
            "%s started: %d bot(s) %s, Bot API %s, NATS %s",
            SERVICE_NAME,
            len(self.settings.bots),
            ", ".join(bot.label for bot in self.settings.bots),
            self.settings.telegram_api_url,
            self.settings.nats_url,
        )

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                logger.exception("stopping %s failed", type(component).__name__)
        self.botapi.close()
        self.bus.stop()

    def checks(self) -> dict[str, Check]:
        bus = self.bus.status()
        if (
            bus["connected"]
            and bus["stream_ready"]
            and bus["files_bucket_ready"]
            and bus["buckets_ready"]
        ):
            nats_check = Check(
                True,
                f"connected; stream {bus['stream']}, object store {bus['files_bucket']} and "
                "Key-Value buckets ready",
            )
        elif bus["connected"] and bus["stream_ready"] and bus["files_bucket_ready"]:
            nats_check = Check(
                False,
                f"connected but a Key-Value bucket is not ready: {bus['last_error']}",
            )
        elif bus["connected"] and bus["stream_ready"]:
            nats_check = Check(
                False,
                f"connected but object store {bus['files_bucket']} is not ready: "
                f"{bus['last_error']}",
            )
        elif bus["connected"]:
            nats_check = Check(
                False, f"connected but stream {bus['stream']} is not ready: {bus['last_error']}"
            )
        else:
            nats_check = Check(
                False,
                f"disconnected for {bus['disconnected_for_s']} s: "
                f"{bus['last_error'] or 'connecting'}",
            )
        checks = {"nats": nats_check}
        for component in self.components:
            checks.update(component.checks())
        return checks

    def health(self) -> dict[str, Any]:
        checks = self.checks()
        ok = all(check.ok for check in checks.values())
        return {
            "status": "ok" if ok else "degraded",
            "service": SERVICE_NAME,
            "telegram_api": "ok" if self.probe.ok else "unreachable",
            "nats": "connected" if self.bus.connected else "disconnected",
            "checks": {name: check.as_dict() for name, check in checks.items()},
        }
