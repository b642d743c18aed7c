"""AMI (panoramisk Manager) for what ARI lacks: device, peer and contact state of SIP phones.

Each configured node gets a panoramisk ``Manager`` (it reconnects by itself). The latest
state per device is kept in memory, logged, and written to Redis for the queue runtime:
hash ``callyard:asterisk:devices`` (device -> state, e.g. ``PJSIP/1001`` -> ``NOT_INUSE``)
and a JSON message on channel ``callyard:asterisk:device-state`` per change, written one
after another in the order they came (the hash ends with the latest state). Only the
Manager part of panoramisk is used (its FastAGI does not run on Python 3.11).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from redis.asyncio import Redis
from redis.exceptions import RedisError

from appserver.settings import AmiNode

log = logging.getLogger(__name__)

DEVICES_KEY = "callyard:asterisk:devices"
DEVICE_CHANNEL = "callyard:asterisk:device-state"
# PeerStatus / ContactStatus -> a device state comparable to DeviceStateChange's.
_PEER_STATES = {"Reachable": "NOT_INUSE", "Unreachable": "UNAVAILABLE",
                "Unregistered": "UNAVAILABLE", "Rejected": "UNAVAILABLE"}

DeviceListener = Callable[[str, str, str], None]  # (node, device, state)

# What the session asks Asterisk for. Only these events are read, but a session logged in
# with "Events: on" gets every event of every call (VarSet, Newexten, DTMF, Cdr ...: about
# 30 per call), each one parsed here for nothing (measured: 0.6-0.9 ms of the worker's CPU
# per call; Asterisk formats each event once for all sessions either way). The mask keeps
# the two classes these events are in; the filter (AMI ``Filter``, needs write permission
# ``system``) keeps just these events of them. Action responses (CoreShowChannels' list)
# are not filtered.
EVENT_CLASSES = "system,call"
EVENTS_READ = ("DeviceStateChange", "PeerStatus", "ContactStatus", "FullyBooted")
EVENT_FILTER = f"^Event: ({'|'.join(EVENTS_READ)})[[:space:]]"  # a POSIX extended regex
# ... and of those, none about a Local channel's device (``Local/9999@callyard``: a call
# through a Local channel changes its state two to four times; it is no phone). A filter
# starting with "!" drops the events it matches, anywhere in their text.
LOCAL_DEVICES_FILTER = "!Device: Local/"


class AmiMonitor:
    def __init__(
        self,
        nodes: list[AmiNode],
        redis: Redis | None = None,
        on_device_state: DeviceListener | None = None,
    ) -> None:
        self.nodes = nodes
        self.redis = redis
        self.on_device_state = on_device_state
        self.devices: dict[str, str] = {}
        self.managers: list[Manager] = []
        self._changes: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.redis is not None:
            self._writer = asyncio.ensure_future(self._write_changes(self.redis))
        for node in self.nodes:
            manager = Manager(
                loop=loop, host=node.host, port=node.port, username=node.username,
                secret=node.secret, events=EVENT_CLASSES, ping_delay=10, ping_interval=10,
                reconnect_timeout=2, log=logging.getLogger("appserver.asterisk.ami.manager"),
                on_login=self._filter_events,
            )
            name = f"{node.host}:{node.port}"
            manager.register_event("DeviceStateChange", self._handler(name, self._device))
            manager.register_event("PeerStatus", self._handler(name, self._peer))
            manager.register_event("ContactStatus", self._handler(name, self._contact))
            manager.register_event("FullyBooted", self._handler(name, self._booted))
            await manager.connect()
            self.managers.append(manager)

    def _filter_events(self, manager: Manager) -> None:
        """At each login (panoramisk logs in again after a reconnect: a new session, no
        filter): keep only the events read. Refused, every event of the classes comes on,
        which costs CPU, not correctness."""
        node = f"{manager.config['host']}:{manager.config['port']}"
        for event_filter in (EVENT_FILTER, LOCAL_DEVICES_FILTER):
            sent = manager.send_action({"Action": "Filter", "Operation": "Add",
                                        "Filter": event_filter})
            sent.add_done_callback(functools.partial(self._refused, node, event_filter))

    @staticmethod
    def _refused(node: str, event_filter: str, future: asyncio.Future[Any]) -> None:
        response = None if future.cancelled() or future.exception() else future.result()
        if response is None or not response.success:
            log.info("Asterisk did not take an AMI event filter; more events will come",
                     extra={"node": node, "filter": event_filter,
                            "response": dict(response or {})})

    async def wait_authenticated(self, timeout: float = 5.0) -> None:
        async def all_in() -> None:
            while not all(m.authenticated for m in self.managers):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_in(), timeout)

    async def stop(self) -> None:
        for manager in self.managers:
            manager.close()
            # Keep panoramisk from reconnecting after we closed it on purpose.
            manager.connection_lost = lambda exc: None
        self.managers = []
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    async def drain(self) -> None:
        """Wait until every change so far is written to Redis (tests, shutdown)."""
        await self._changes.join()

    async def core_show_channels(self, index: int = 0) -> list[dict[str, str]]:
        """The node's channels (AMI CoreShowChannels), e.g. to check what Asterisk holds."""
        result = await self.managers[index].send_action({"Action": "CoreShowChannels"})
        messages = result if isinstance(result, list) else [result]
        return [dict(m) for m in messages if m.get("Event") == "CoreShowChannel"]

    # ------------------------------------------------------------------ events

    def _handler(self, node: str, fn: Callable[[str, Any], None]) -> Callable[[Any, Any], None]:
        def handle(manager: Any, event: Any) -> None:
            try:
                fn(node, event)
            except Exception:
                log.exception("bad AMI event ignored", extra={"node": node})

        return handle

    def _booted(self, node: str, event: Any) -> None:
        log.info("AMI connected", extra={"node": node})

    def _device(self, node: str, event: Any) -> None:
        device, state = event.get("Device"), event.get("State")
        if device and state:
            self._update(node, str(device), str(state), "DeviceStateChange")

    def _peer(self, node: str, event: Any) -> None:
        peer, status = str(event.get("Peer", "")), str(event.get("PeerStatus", ""))
        # Only fills in a device we have not heard of; DeviceStateChange is authoritative.
        if (
            status in _PEER_STATES
            and peer.startswith("PJSIP/")
            and (peer not in self.devices or _PEER_STATES[status] == "UNAVAILABLE")
        ):
            self._update(node, peer, _PEER_STATES[status], "PeerStatus")

    def _contact(self, node: str, event: Any) -> None:
        log.info("SIP contact status", extra={
            "node": node, "aor": event.get("AOR"), "uri": event.get("URI"),
            "status": event.get("ContactStatus")})

    def _update(self, node: str, device: str, state: str, source: str) -> None:
        if self.devices.get(device) == state:
            return
        self.devices[device] = state
        log.info("device state", extra={"node": node, "device": device, "state": state,
                                        "source": source})
        if self.on_device_state:
            self.on_device_state(node, device, state)
        if self._writer is not None:
            self._changes.put_nowait((node, device, state))

    async def _write_changes(self, redis: Redis) -> None:
        """Write the changes one after another: concurrent writes could land out of order
        (each on its own pooled connection) and leave an older state in the hash."""
        while True:
            node, device, state = await self._changes.get()
            try:
                with contextlib.suppress(RedisError, OSError):
                    await redis.hset(DEVICES_KEY, device, state)
                    await redis.publish(DEVICE_CHANNEL, json.dumps(
                        {"node": node, "device": device, "state": state}))
            finally:
                self._changes.task_done()
