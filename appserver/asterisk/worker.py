"""The Asterisk worker: a Stasis application on every configured node, running call flows.

Per node: one :class:`~appserver.asterisk.ari.AriClient` (REST and the events WebSocket), a
:class:`~appserver.asterisk.link.NodeLink` keeping the WebSocket open and a
:class:`~appserver.asterisk.node.NodeCalls` running the node's calls, each call a
:class:`~appserver.asterisk.driver.CallDriver` in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.asyncio import Redis

from appserver.asterisk.ari import AriClient
from appserver.asterisk.callstore import CallStore
from appserver.asterisk.driver import CallDriver, DriverConfig, EnqueueHandler
from appserver.asterisk.link import LinkConfig, NodeLink
from appserver.asterisk.node import CallLost, CdrsDurable, FlowFactory, NodeCalls, TakeOver
from appserver.settings import AriNode
from ivr.calls import Event

log = logging.getLogger(__name__)

DEFAULT_CONFIG, DEFAULT_LINK = DriverConfig(), LinkConfig()
INBOX_BATCH = 64  # events from other components handed to calls per event-loop turn


class AsteriskWorker:
    """Runs call flows for channels that Asterisk's dialplan sends to ``Stasis(<app>)``.

    ``flow_factory(call_info)`` returns the flow for a call (or an awaitable of it), or None
    for a number nobody serves (the caller hears a polite message, then the call ends).
    Per-call records go to ``redis`` (none: no re-adoption after a restart).
    """

    def __init__(
        self,
        nodes: list[AriNode],
        flow_factory: FlowFactory,
        *,
        app: str = "callyard",
        redis: Redis | None = None,
        config: DriverConfig = DEFAULT_CONFIG,
        link: LinkConfig = DEFAULT_LINK,
        on_enqueue: EnqueueHandler | None = None,
        on_call_lost: CallLost | None = None,
        cdrs_durable: CdrsDurable | None = None,
        take_over: TakeOver | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("no Asterisk node configured (CALLYARD_ASTERISK_ARI)")
        self.store = CallStore(redis, app)
        self.clients = [AriClient(node, app) for node in nodes]
        self.nodes = [
            NodeCalls(node.name, client, flow_factory, self.store, config,
                      on_enqueue=on_enqueue, on_call_lost=on_call_lost,
                      cdrs_durable=cdrs_durable, take_over=take_over)
            for node, client in zip(nodes, self.clients, strict=True)
        ]
        self.links = [NodeLink(calls.name, calls.client, calls, link) for calls in self.nodes]
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: deque[tuple[str, Event]] = deque()  # see deliver()
        self._inbox_scheduled = False

    @property
    def draining(self) -> bool:
        return any(node.draining for node in self.nodes)

    @draining.setter
    def draining(self, value: bool) -> None:
        """Set at shutdown: new calls go to the dialplan's fallback."""
        for node in self.nodes:
            node.draining = value

    @property
    def active_calls(self) -> int:
        return sum(len(node.calls) for node in self.nodes)

    def call(self, call_id: str) -> CallDriver | None:
        for node in self.nodes:
            if call_id in node.calls:
                return node.calls[call_id]
        return None

    def has_call(self, call_id: str) -> bool:
        call = self.call(call_id)
        return call is not None and not call.finished

    def deliver(self, call_id: str, event: Event) -> None:
        """Deliver an event from another component (e.g. the queue runtime: pass this as its
        ``deliver`` callback) to a call. Events for calls not (or no longer) on this worker
        are logged and dropped; :meth:`has_call` tells beforehand.

        Events reach the calls in order, :data:`INBOX_BATCH` per event-loop turn: a burst
        (a queue tick moving 2,000 waiting callers up one place) then never holds up the
        engine's events (a caller's key press) for longer than one batch."""
        self._inbox.append((call_id, event))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_inbox)

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        for _ in range(min(len(inbox), INBOX_BATCH)):
            call_id, event = inbox.popleft()
            call = self.call(call_id)
            if call is None or call.finished:
                log.info("event for a call not on this worker dropped",
                         extra={"call_id": call_id, "event": type(event).__name__})
                continue
            call.post(event)
        if inbox:
            asyncio.get_running_loop().call_soon(self._drain_inbox)  # after pending I/O
        else:
            self._inbox_scheduled = False

    async def start(self) -> None:
        self._tasks = [asyncio.ensure_future(link.run()) for link in self.links]

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(link.connected.wait() for link in self.links)), timeout
        )

    async def stop(self) -> None:
        """Stop without hanging up: channels stay in Stasis for re-adoption."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for node in self.nodes:
            await node.stop()
        for client in self.clients:
            await client.close()
        await self.store.close()

    async def __aenter__(self) -> AsteriskWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
