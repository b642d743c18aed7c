"""The Asterisk worker: a Stasis application on every configured node, running call flows.

Per node a :class:`NodeLink` owns the ``aioari`` client, the events WebSocket and the
reconnect loop (``client.run()`` returns quietly when Asterisk goes away, so the loop is
ours), plus a watchdog: it sends itself a user event over REST and expects it back on the
WebSocket, which catches a subscription that vanished without the socket closing.

Re-adoption (what survives what):

* WebSocket drop, process alive (the common case): call sessions and their flow objects stay
  in memory, REST keeps working during the gap. After reconnecting the link lists
  ``GET /applications/{app}``; a session whose channel is gone gets ``HungUp``; the others
  re-read their state (playbacks that finished during the gap get ``PlayFinished``, a dial
  leg that ended gets its ``DialResult``). DTMF pressed during the gap is lost.
* Process restart: each call's record (its :class:`CallInfo`) is kept in Redis while the call
  lasts. Channels still in the application with a record get a fresh flow from the factory
  whose ``start`` is delivered again (the caller hears the menu from the top); orphaned dial
  legs are hung up; channels with no record (their StasisStart was lost) are adopted as new;
  records whose channel is gone (the call ended while no worker watched) go to
  ``on_call_lost`` (the CDR of the call) and are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aioari
import aiohttp
from aiohttp import web_exceptions
from redis.asyncio import Redis

from appserver.asterisk.callstore import CallRecord, CallStore
from appserver.asterisk.rest import HotRest
from appserver.asterisk.session import CallSession, ChannelEvent, EnqueueHandler, LegEvent, Resync
from appserver.settings import AriNode
from ivr.calls import CallFlow, CallInfo, Event

log = logging.getLogger(__name__)

FlowFactory = Callable[[CallInfo], "CallFlow | Awaitable[CallFlow | None] | None"]
WATCHDOG_EVENT = "callyard-watchdog"
INBOX_BATCH = 64  # events from other components handed to calls per event-loop turn
_NETWORK_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class NodeLink:
    """One Asterisk node: connection, reconnects, event routing and its calls."""

    def __init__(self, worker: AsteriskWorker, node: AriNode) -> None:
        self.worker = worker
        self.node = node
        self.name = node.name
        self.app = worker.app
        self.client: Any = None  # aioari.Client of the current connection
        self.rest: HotRest | None = None  # the hot per-call requests, on the client's session
        self.sessions: dict[str, CallSession] = {}
        self.legs: dict[str, CallSession] = {}  # dial leg channel id -> owner
        self.bridges: dict[str, CallSession] = {}
        self.connected = asyncio.Event()
        self.connections = 0  # successful (re)connections, for tests and metrics
        self._watchdog_seen: dict[str, asyncio.Event] = {}
        # Channels whose session is being created: events buffered until it exists.
        self._pending: dict[str, list[ChannelEvent]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ registry

    def register_leg(self, leg_id: str, session: CallSession) -> None:
        self.legs[leg_id] = session

    def unregister_leg(self, leg_id: str) -> None:
        self.legs.pop(leg_id, None)

    def register_bridge(self, bridge_id: str, session: CallSession) -> None:
        self.bridges[bridge_id] = session

    def unregister_bridge(self, bridge_id: str) -> None:
        self.bridges.pop(bridge_id, None)

    def unregister(self, session: CallSession) -> None:
        if self.sessions.get(session.channel_id) is session:
            del self.sessions[session.channel_id]

    # ------------------------------------------------------------------ connection loop

    async def run(self) -> None:
        """Connect, subscribe, serve; on any loss reconnect with backoff. The REST client
        (and its HTTP session, which calls in progress keep using) survives a dropped
        events socket; it is only replaced when Asterisk stops answering REST too."""
        try:
            await self._connection_loop()
        finally:
            if self.client is not None:
                with contextlib.suppress(Exception):
                    await self.client.close()
                self.client = None
            if self.rest is not None:
                await self.rest.close()
                self.rest = None

    async def _connection_loop(self) -> None:
        delay = self.worker.reconnect_min
        client: Any = None
        while not self._stopping:
            watchdog: asyncio.Task[None] | None = None
            try:
                if client is None:
                    client = await asyncio.wait_for(
                        aioari.connect(self.node.url + "/", self.node.username,
                                       self.node.password),
                        self.worker.connect_timeout,
                    )
                    client.on_event("*", self._on_message)
                    old, self.client = self.client, client
                    old_rest, self.rest = self.rest, HotRest(client)
                    if old is not None:
                        with contextlib.suppress(Exception):
                            await old.close()
                    if old_rest is not None:
                        await old_rest.close()
                self._run_task = asyncio.ensure_future(client.run(apps=self.app))
                await self._wait_subscribed(client)
                self.connections += 1
                log.info("connected to Asterisk", extra={"node": self.name, "app": self.app})
                self.connected.set()
                delay = self.worker.reconnect_min
                await self._readopt()
                watchdog = asyncio.ensure_future(self._watchdog(client))
                try:
                    await self._run_task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if self._stopping or (current is not None and current.cancelling()):
                        raise
                    # Cancelled by the watchdog: reconnect.
                if not self._stopping:
                    log.warning("ARI events socket closed; reconnecting",
                                extra={"node": self.name})
            except asyncio.CancelledError:
                raise
            except (*_NETWORK_ERRORS, web_exceptions.HTTPException, ValueError) as exc:
                log.warning("cannot reach Asterisk ARI",
                            extra={"node": self.name, "error": str(exc) or type(exc).__name__})
            finally:
                self.connected.clear()
                if watchdog:
                    watchdog.cancel()
                if self._run_task and not self._run_task.done():
                    self._run_task.cancel()
                    with contextlib.suppress(BaseException):
                        await self._run_task
            if self._stopping:
                break
            if client is not None and not await self._rest_alive(client):
                client = None  # replaced (and the old one closed) on the next connect
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.worker.reconnect_max)

    async def _rest_alive(self, client: Any) -> bool:
        try:
            await asyncio.wait_for(client.asterisk.ping(), self.worker.connect_timeout)
        except (*_NETWORK_ERRORS, web_exceptions.HTTPException, RuntimeError):
            return False
        return True

    async def _wait_subscribed(self, client: Any) -> None:
        """Wait until aioari has opened the events WebSocket (or its run() ended)."""
        assert self._run_task is not None
        for _ in range(int(self.worker.connect_timeout / 0.01)):
            if client.websockets or self._run_task.done():
                break
            await asyncio.sleep(0.01)
        if self._run_task.done():
            self._run_task.result()  # raises the connection error, if any
            raise ConnectionError("events WebSocket closed at once")
        if not client.websockets:
            raise TimeoutError("events WebSocket did not open")

    async def _watchdog(self, client: Any) -> None:
        """Every interval: a user event to ourselves must come back over the WebSocket."""
        interval, timeout = self.worker.watchdog_interval, self.worker.watchdog_timeout
        while True:
            await asyncio.sleep(interval)
            token = uuid.uuid4().hex
            seen = self._watchdog_seen[token] = asyncio.Event()
            try:
                await client.events.userEvent(
                    eventName=f"{WATCHDOG_EVENT}-{token}", application=self.app
                )
                await asyncio.wait_for(seen.wait(), timeout)
            except (*_NETWORK_ERRORS, web_exceptions.HTTPException) as exc:
                if self._stopping:
                    return
                log.warning("ARI watchdog: subscription lost; reconnecting",
                            extra={"node": self.name, "error": str(exc) or type(exc).__name__})
                if self._run_task:
                    self._run_task.cancel()
                return
            finally:
                self._watchdog_seen.pop(token, None)

    async def stop(self) -> None:
        self._stopping = True
        if self._run_task:
            self._run_task.cancel()
        tasks = [s.task for s in self.sessions.values() if s.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ event routing

    def _on_message(self, msg: dict[str, Any]) -> None:
        """aioari awaits this before reading the next message: route only, never block."""
        try:
            self._route(msg)
        except Exception:
            log.exception("could not route an ARI event", extra={"node": self.name,
                                                                  "type": msg.get("type")})

    def _route(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if msg.get("application") not in (None, self.app):
            return
        if kind == "StasisStart":
            self._on_stasis_start(msg)
            return
        if kind == "ChannelUserevent":
            name = str(msg.get("eventname", ""))
            if name.startswith(WATCHDOG_EVENT + "-"):
                seen = self._watchdog_seen.get(name[len(WATCHDOG_EVENT) + 1:])
                if seen:
                    seen.set()
            return
        target: CallSession | None = None
        leg = False
        playback = msg.get("playback")
        if isinstance(playback, dict):
            scheme, _, target_id = str(playback.get("target_uri", "")).partition(":")
            target = (self.sessions.get(target_id) if scheme == "channel"
                      else self.bridges.get(target_id))
        else:
            channel = msg.get("channel") or msg.get("peer")
            channel_id = channel.get("id") if isinstance(channel, dict) else None
            if channel_id in self.sessions:
                target = self.sessions[channel_id]
            elif channel_id in self._pending:
                self._pending[channel_id].append(ChannelEvent(msg))
                return
            elif channel_id in self.legs:
                target, leg = self.legs[channel_id], True
        if target is None:
            if kind not in _KNOWN_EVENTS:
                log.info("ignored unknown ARI event", extra={"node": self.name, "type": kind})
            return
        target.post(LegEvent(msg) if leg else ChannelEvent(msg))

    def _on_stasis_start(self, msg: dict[str, Any]) -> None:
        channel = msg.get("channel")
        if not isinstance(channel, dict) or not channel.get("id"):
            log.warning("StasisStart without a channel ignored", extra={"node": self.name})
            return
        channel_id = str(channel["id"])
        args = [str(a) for a in msg.get("args") or []]
        if args[:1] == ["dial"]:
            owner = self.legs.get(channel_id)
            if owner is not None:
                owner.post(LegEvent(msg))
            else:
                log.warning("dial leg without a caller; hanging up",
                            extra={"node": self.name, "call_id": channel_id})
                self._background_task(self._hangup_quietly(channel_id))
            return
        if channel_id in self.sessions or channel_id in self._pending:
            return
        self._pending[channel_id] = []
        self._background_task(self._start_call(self._call_info(channel, args)))

    def _background_task(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _call_info(self, channel: dict[str, Any], args: list[str]) -> CallInfo:
        caller = channel.get("caller") or {}
        dialplan = channel.get("dialplan") or {}
        called = args[0] if args and args[0] else str(dialplan.get("exten", ""))
        return CallInfo(
            call_id=str(channel["id"]),
            engine="asterisk",
            caller=str(caller.get("number", "")),
            called=called,
            node=self.name,
            caller_name=str(caller.get("name", "")),
            variables={"channel_name": str(channel.get("name", "")),
                       "protocol_id": str(channel.get("protocol_id", ""))},
        )

    async def _start_call(self, info: CallInfo, readopted: bool = False) -> None:
        self._pending.setdefault(info.call_id, [])
        try:
            await self._create_session(info, readopted)
        finally:
            buffered = self._pending.pop(info.call_id, [])
            session = self.sessions.get(info.call_id)
            if session is not None:
                for item in buffered:
                    session.post(item)

    async def _create_session(self, info: CallInfo, readopted: bool) -> None:
        if info.call_id in self.sessions:
            return
        log_extra = {"call_id": info.call_id, "node": self.name, "called": info.called}
        if self.worker.draining and not readopted:  # shutting down: as if Stasis() failed
            log.info("shutting down: new call sent to the fallback", extra=log_extra)
            await self._unavailable(info.call_id, "s")
            return
        try:
            flow = self.worker.flow_factory(info)
            if inspect.isawaitable(flow):
                flow = await flow
        except Exception:
            log.exception("flow factory failed", extra=log_extra)
            flow = None
            await self._unavailable(info.call_id, "s")
            return
        if flow is None:
            log.info("no call flow for this number", extra=log_extra)
            await self._unavailable(info.call_id, "noservice")
            return
        if info.call_id in self.sessions:
            return
        session = CallSession(self, info, flow)
        self.sessions[info.call_id] = session
        self.worker.calls_started += 1
        if not readopted:
            log.info("call started", extra={**log_extra, "caller": info.caller})
            await self.worker.store.save(self.name, info.call_id,
                                         CallRecord(info, started_at=time.time()))
        session.start(readopted)

    async def _unavailable(self, channel_id: str, exten: str) -> None:
        """Polite message and hangup, from the dialplan's fallback context."""
        try:
            await self.client.channels.continueInDialplan(
                channelId=channel_id, context=self.worker.fallback_context, extension=exten,
                priority=1,
            )
        except (*_NETWORK_ERRORS, web_exceptions.HTTPException):
            await self._hangup_quietly(channel_id)

    async def _hangup_quietly(self, channel_id: str) -> None:
        with contextlib.suppress(*_NETWORK_ERRORS, web_exceptions.HTTPException):
            await self.client.channels.hangup(channelId=channel_id)

    # ------------------------------------------------------------------ re-adoption

    async def _readopt(self) -> None:
        try:
            app = await self.client.applications.get(applicationName=self.app)
            live = {str(c) for c in (app.json if hasattr(app, "json") else app)["channel_ids"]}
        except web_exceptions.HTTPNotFound:
            live = set()
        store = self.worker.store
        for channel_id, session in list(self.sessions.items()):
            if channel_id in live:
                session.post(Resync())
            else:
                session.post(Resync())  # re-reads the channel: 404 delivers HungUp
        recorded = await store.channel_ids(self.name)
        for channel_id in live - set(self.sessions) - set(self.legs) - set(self._pending):
            record = await store.load(self.name, channel_id)
            if record is not None and record.owner:
                log.info("hanging up an orphaned dial leg", extra={"call_id": channel_id})
                await self._hangup_quietly(channel_id)
                await store.delete(self.name, channel_id)
            elif record is not None:
                await self._start_call(record.info, readopted=True)
            else:
                try:
                    channel = await self.client.channels.get(channelId=channel_id)
                except web_exceptions.HTTPNotFound:
                    continue
                data = channel.json
                dialplan = data.get("dialplan") or {}
                app_data = str(dialplan.get("app_data", "")).split(",")
                log.info("adopting a channel found in the application",
                         extra={"call_id": channel_id})
                await self._start_call(self._call_info(data, app_data[1:2]))
        for channel_id in recorded - live:
            if channel_id not in self.sessions and channel_id not in self.legs:
                await self._ended_unseen(channel_id)

    async def _ended_unseen(self, channel_id: str) -> None:
        """A call recorded by a worker that died, which ended while no worker watched it:
        the worker's ``on_call_lost`` records it (its CDR), then the record goes."""
        record = await self.worker.store.load(self.name, channel_id)
        if record is not None and not record.owner and self.worker.on_call_lost is not None:
            log.info("a call ended while no worker watched it", extra={"call_id": channel_id})
            self.worker.on_call_lost(record)
        await self.worker.store.delete(self.name, channel_id)


_KNOWN_EVENTS = {
    "StasisEnd", "ChannelStateChange", "ChannelDtmfReceived", "ChannelHangupRequest",
    "ChannelDestroyed", "ChannelVarset", "ChannelEnteredBridge", "ChannelLeftBridge",
    "BridgeCreated", "BridgeDestroyed", "PlaybackStarted", "PlaybackContinuing",
    "PlaybackFinished", "Dial", "ChannelDialplan", "ChannelCallerId", "ChannelConnectedLine",
    "EndpointStateChange", "DeviceStateChanged", "ContactStatusChange", "PeerStatusChange",
    "ApplicationReplaced", "ChannelTalkingStarted", "ChannelTalkingFinished", "ChannelHold",
    "ChannelUnhold",
}


class AsteriskWorker:
    """Runs call flows for channels that Asterisk's dialplan sends to ``Stasis(<app>)``.

    ``flow_factory(call_info)`` returns the flow for a call (or an awaitable of it), or None
    for a number nobody serves (the caller hears a polite message, then the call ends).
    """

    def __init__(
        self,
        nodes: list[AriNode],
        flow_factory: FlowFactory,
        *,
        app: str = "callyard",
        redis: Redis | None = None,
        dial_template: str = "PJSIP/{target}",
        sip_template: str = "PJSIP/kamailio/{target}",
        transfer_context: str = "callyard-transfer",
        fallback_context: str = "callyard-unavailable",
        on_enqueue: EnqueueHandler | None = None,
        on_call_lost: Callable[[CallRecord], None] | None = None,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        connect_timeout: float = 10.0,
        watchdog_interval: float = 5.0,
        watchdog_timeout: float = 3.0,
    ) -> None:
        if not nodes:
            raise ValueError("no Asterisk node configured (CALLYARD_ASTERISK_ARI)")
        self.app = app
        self.flow_factory = flow_factory
        self.store = CallStore(redis)
        self.dial_template = dial_template
        self.sip_template = sip_template  # for Dial(kind="sip"): target is a SIP URI
        self.transfer_context = transfer_context
        self.fallback_context = fallback_context
        self.on_enqueue = on_enqueue
        self.on_call_lost = on_call_lost  # see NodeLink._ended_unseen
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.connect_timeout = connect_timeout
        self.watchdog_interval = watchdog_interval
        self.watchdog_timeout = watchdog_timeout
        self.calls_started = 0
        self.draining = False  # set at shutdown: new calls go to the dialplan's fallback
        self.links = [NodeLink(self, node) for node in nodes]
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: deque[tuple[str, Event]] = deque()  # see deliver()
        self._inbox_scheduled = False

    @property
    def active_calls(self) -> int:
        return sum(len(link.sessions) for link in self.links)

    def session(self, call_id: str) -> CallSession | None:
        for link in self.links:
            if call_id in link.sessions:
                return link.sessions[call_id]
        return None

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
            session = self.session(call_id)
            if session is None or session.finished:
                log.info("event for a call not on this worker dropped",
                         extra={"call_id": call_id, "event": type(event).__name__})
                continue
            session.post(event)
        if inbox:
            asyncio.get_running_loop().call_soon(self._drain_inbox)  # after pending I/O
        else:
            self._inbox_scheduled = False

    def has_call(self, call_id: str) -> bool:
        session = self.session(call_id)
        return session is not None and not session.finished

    async def start(self) -> None:
        self._tasks = [asyncio.ensure_future(link.run()) for link in self.links]

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(link.connected.wait() for link in self.links)), timeout
        )

    async def stop(self) -> None:
        """Stop without hanging up: channels stay in Stasis for re-adoption."""
        for link in self.links:
            await link.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.store.close()

    async def __aenter__(self) -> AsteriskWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
