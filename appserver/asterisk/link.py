"""The link to one Asterisk node: the application's events WebSocket, kept open.

The link connects, hands every event to its :class:`EventSink` (the node's calls,
:mod:`appserver.asterisk.node`) and, after each (re)connection, has the sink re-adopt what it
may have missed. On any loss it reconnects with backoff (``reconnect_min`` doubling to
``reconnect_max``, with jitter). A watchdog sends the application a user event over REST every
``watchdog_interval`` and expects it back on the WebSocket within ``watchdog_timeout``: that
catches a subscription that vanished while the socket stayed open. REST does not depend on the
WebSocket: calls in progress keep sending commands while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from appserver.asterisk.ari import AriClient
from appserver.asterisk.port import AriError

log = logging.getLogger(__name__)

WATCHDOG_EVENT = "callyard-watchdog"


@dataclass(frozen=True)
class LinkConfig:
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    watchdog_interval: float = 5.0
    watchdog_timeout: float = 3.0


class EventSink(Protocol):
    def route(self, msg: dict[str, Any]) -> None:
        """One ARI event; called by the reader: must not block."""

    async def readopt(self) -> None:
        """Just (re)connected: catch up on what happened while no socket was open."""


class NodeLink:
    def __init__(self, name: str, client: AriClient, sink: EventSink,
                 config: LinkConfig) -> None:
        self.name = name
        self.client = client
        self.sink = sink
        self.config = config
        self.connected = asyncio.Event()
        self.connections = 0  # successful (re)connections, for tests and metrics
        self._watchdog_seen: dict[str, asyncio.Event] = {}

    async def run(self) -> None:
        """Connect, serve, and on any loss reconnect, until cancelled."""
        delay = self.config.reconnect_min
        while True:
            try:
                async with self.client.events(self.config.connect_timeout) as events:
                    self.connections += 1
                    self.connected.set()
                    log.info("connected to Asterisk",
                             extra={"node": self.name, "app": self.client.app})
                    delay = self.config.reconnect_min
                    await self._serve(events)
                log.warning("ARI events socket closed; reconnecting", extra={"node": self.name})
            except (OSError, AriError, ValueError) as exc:
                log.warning("cannot reach Asterisk ARI",
                            extra={"node": self.name, "error": str(exc) or type(exc).__name__})
            finally:
                self.connected.clear()
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.config.reconnect_max)

    async def _serve(self, events: AsyncIterator[str]) -> None:
        """Read events until the socket closes or the watchdog gives up on it."""
        reader = asyncio.ensure_future(self._read(events))
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            await self.sink.readopt()
            await asyncio.wait((reader, watchdog), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, watchdog):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await asyncio.gather(watchdog, return_exceptions=True)
        if reader.done() and not reader.cancelled():
            reader.result()  # the reader's error, if any

    async def _read(self, events: AsyncIterator[str]) -> None:
        async for text in events:
            try:
                msg = json.loads(text)
            except ValueError:
                log.warning("ARI event that is not JSON ignored", extra={"node": self.name})
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "ChannelUserevent" and self._watchdog_event(msg):
                continue
            try:
                self.sink.route(msg)
            except Exception:
                log.exception("could not route an ARI event",
                              extra={"node": self.name, "type": msg.get("type")})

    def _watchdog_event(self, msg: dict[str, Any]) -> bool:
        name = str(msg.get("eventname", ""))
        if not name.startswith(WATCHDOG_EVENT + "-"):
            return False
        seen = self._watchdog_seen.get(name[len(WATCHDOG_EVENT) + 1:])
        if seen:
            seen.set()
        return True

    async def _watchdog(self) -> None:
        """Every interval: a user event to ourselves must come back over the WebSocket."""
        interval, timeout = self.config.watchdog_interval, self.config.watchdog_timeout
        while True:
            await asyncio.sleep(interval)
            token = uuid.uuid4().hex
            seen = self._watchdog_seen[token] = asyncio.Event()
            try:
                await self.client.user_event(f"{WATCHDOG_EVENT}-{token}")
                await asyncio.wait_for(seen.wait(), timeout)
            except (OSError, AriError) as exc:  # TimeoutError is an OSError
                log.warning("ARI watchdog: subscription lost; reconnecting",
                            extra={"node": self.name, "error": str(exc) or type(exc).__name__})
                return
            finally:
                self._watchdog_seen.pop(token, None)
