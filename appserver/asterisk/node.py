"""The calls on one Asterisk node: starting them, routing ARI events to them, re-adoption.

Re-adoption (what survives what), run by the link after every (re)connection:

* WebSocket drop, process alive (the common case): call drivers and their flow objects stay
  in memory, REST keeps working during the gap. After reconnecting the node lists
  ``GET /applications/{app}`` and every call re-reads its state (a channel that is gone gets
  ``HungUp``, playbacks that finished during the gap get ``PlayFinished``, a dial leg that
  ended gets its ``DialResult``). DTMF pressed during the gap is lost.
* Process restart: each call's record (its :class:`CallInfo`) is kept in Redis while the call
  lasts (:mod:`appserver.asterisk.callstore`). Channels still in the application with a record
  get a fresh flow from the factory whose ``start`` is delivered again (the caller hears the
  menu from the top; a caller who was queued is first taken over by ``take_over`` and goes
  on waiting at their place); orphaned dial legs are hung up; channels with no record (their
  StasisStart was lost) are adopted as new; records whose channel is gone (the call ended
  while no worker watched) go to ``on_call_lost`` (the CDR of the call) and are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from appserver.asterisk.ari import AriClient
from appserver.asterisk.callstore import CallRecord, CallStore
from appserver.asterisk.driver import (
    BRIDGE_SEPARATOR,
    CallDriver,
    ChannelEvent,
    DriverConfig,
    EnqueueHandler,
    LegEvent,
    Resync,
)
from appserver.asterisk.media import cause_name
from appserver.asterisk.port import AriError
from appserver.queues.caller_flow import CALLBACK_VARIABLE
from ivr.calls import CallFlow, CallInfo

log = logging.getLogger(__name__)

FlowFactory = Callable[[CallInfo], "CallFlow | Awaitable[CallFlow | None] | None"]
CallLost = Callable[[CallRecord], None]
CdrsDurable = Callable[[], Awaitable[None]]  # once the CDRs handed over so far are in Redis
# Called with each re-adopted call before its flow is built: a caller queued by the worker
# that died is taken over where they were (the queue runtime's take_over).
TakeOver = Callable[[CallInfo], Awaitable[object]]

_KNOWN_EVENTS = {
    "StasisEnd", "ChannelStateChange", "ChannelDtmfReceived", "ChannelHangupRequest",
    "ChannelDestroyed", "ChannelVarset", "ChannelEnteredBridge", "ChannelLeftBridge",
    "BridgeCreated", "BridgeDestroyed", "PlaybackStarted", "PlaybackContinuing",
    "PlaybackFinished", "Dial", "ChannelDialplan", "ChannelCallerId", "ChannelConnectedLine",
    "EndpointStateChange", "DeviceStateChanged", "ContactStatusChange", "PeerStatusChange",
    "ApplicationReplaced", "ChannelTalkingStarted", "ChannelTalkingFinished", "ChannelHold",
    "ChannelUnhold", "ChannelUserevent", "RecordingStarted", "RecordingFinished",
    "RecordingFailed",
}


class NodeCalls:
    """The calls of one node (``name``), served through ``client``. Implements the link's
    :class:`~appserver.asterisk.link.EventSink` and the drivers'
    :class:`~appserver.asterisk.driver.LegRegistry`."""

    def __init__(self, name: str, client: AriClient, flows: FlowFactory, store: CallStore,
                 config: DriverConfig, *, on_enqueue: EnqueueHandler | None = None,
                 on_call_lost: CallLost | None = None,
                 cdrs_durable: CdrsDurable | None = None,
                 take_over: TakeOver | None = None) -> None:
        self.name = name
        self.take_over = take_over
        self.client = client
        self.flows = flows
        self.store = store
        self.config = config
        self.on_enqueue = on_enqueue
        self.on_call_lost = on_call_lost
        self.cdrs_durable = cdrs_durable
        self.draining = False  # new calls go to the dialplan's fallback
        self.calls: dict[str, CallDriver] = {}
        self.legs: dict[str, CallDriver] = {}  # dial leg channel id -> the call that dialed
        # Channels whose driver is being created: events buffered until it exists.
        self._pending: dict[str, list[ChannelEvent]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # calls' tasks and background requests
        # Channels originated to callback customers: how each dial ends (see callbacks.py).
        self.callback_dials: dict[str, asyncio.Future[tuple[str, str]]] = {}

    async def stop(self) -> None:
        """Cancel every call's task: channels stay in Stasis for re-adoption."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ LegRegistry

    async def add_leg(self, leg_id: str, call: CallDriver) -> None:
        self.legs[leg_id] = call
        await self.store.save(self.name, leg_id, CallRecord(call.info, owner=call.channel_id))

    async def drop_leg(self, leg_id: str) -> None:
        self.legs.pop(leg_id, None)
        await self.store.delete(self.name, leg_id)

    # ------------------------------------------------------------------ event routing

    def route(self, msg: dict[str, Any]) -> None:
        """Hand one ARI event to the call it is about (the reader: route only, never block)."""
        kind = msg.get("type")
        if msg.get("application") not in (None, self.client.app):
            return
        if kind == "StasisStart":
            self._on_stasis_start(msg)
            return
        if self.callback_dials and kind == "ChannelDestroyed":
            self._callback_dial_over(msg)
        target: CallDriver | None = None
        leg = False
        playback = msg.get("playback") or msg.get("recording")
        if isinstance(playback, dict):
            scheme, _, target_id = str(playback.get("target_uri", "")).partition(":")
            if scheme == "bridge":  # a call's bridge is named <channel id>~<n> (the driver)
                target_id = target_id.rpartition(BRIDGE_SEPARATOR)[0]
            target = self.calls.get(target_id) if scheme in ("channel", "bridge") else None
        else:
            channel = msg.get("channel") or msg.get("peer")
            channel_id = channel.get("id") if isinstance(channel, dict) else None
            if channel_id in self.calls:
                target = self.calls[channel_id]
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
        if args[:1] in (["dial"], ["supervise"]):  # a leg a call dialled, or its snoop
            owner = self.legs.get(channel_id)
            if owner is not None:
                owner.post(LegEvent(msg))
            else:
                log.warning("dial leg without a caller; hanging up",
                            extra={"node": self.name, "call_id": channel_id})
                self._background(self._hangup_quietly(channel_id))
            return
        if channel_id in self.calls or channel_id in self._pending:
            return
        info = self._call_info(channel, args)
        if args[:1] == ["callback"] and len(args) > 1:  # a callback's customer answered
            self._resolve_callback_dial(channel_id, ("answered", "ANSWER"))
            info = replace(info, called=str((channel.get("dialplan") or {}).get("exten", "")),
                           variables={**info.variables, CALLBACK_VARIABLE: args[1]})
        self._pending[channel_id] = []
        self._background(self._start_call(info))

    def _callback_dial_over(self, msg: dict[str, Any]) -> None:
        """A callback's customer channel ended before it answered: busy (cause 17), no
        answer (18, 19) or failed (anything else)."""
        channel = msg.get("channel") or {}
        cause = msg.get("cause")
        outcome = {17: "busy", 18: "no_answer", 19: "no_answer"}.get(
            cause if isinstance(cause, int) else 0, "failed")
        self._resolve_callback_dial(str(channel.get("id", "")), (outcome, cause_name(cause)))

    def _resolve_callback_dial(self, channel_id: str, result: tuple[str, str]) -> None:
        waiter = self.callback_dials.pop(channel_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

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

    # ------------------------------------------------------------------ starting calls

    async def _start_call(self, info: CallInfo, readopted: bool = False) -> None:
        self._pending.setdefault(info.call_id, [])
        try:
            call = await self._new_call(info, readopted)
        finally:
            buffered = self._pending.pop(info.call_id, [])
        if call is not None:
            for item in buffered:
                call.post(item)

    async def _new_call(self, info: CallInfo, readopted: bool) -> CallDriver | None:
        """The call's driver, started; None when the call went to the dialplan instead."""
        if info.call_id in self.calls:
            return None
        log_extra = {"call_id": info.call_id, "node": self.name, "called": info.called}
        if self.draining and not readopted:  # shutting down: as if Stasis() failed
            log.info("shutting down: new call sent to the fallback", extra=log_extra)
            await self._unavailable(info.call_id, "s")
            return None
        try:
            if readopted and self.take_over is not None:
                await self.take_over(info)
            flow = self.flows(info)
            if inspect.isawaitable(flow):
                flow = await flow
        except Exception:
            log.exception("flow factory failed", extra=log_extra)
            await self._unavailable(info.call_id, "s")
            return None
        if flow is None:
            log.info("no call flow for this number", extra=log_extra)
            await self._unavailable(info.call_id, "noservice")
            return None
        if info.call_id in self.calls:
            return None
        call = CallDriver(info, flow, self.client, self.config, self, self.on_enqueue)
        self.calls[info.call_id] = call
        if not readopted:
            log.info("call started", extra={**log_extra, "caller": info.caller})
            await self.store.save(self.name, info.call_id,
                                  CallRecord(info, started_at=time.time()))
        self._background(self._serve(call, readopted))
        return call

    async def _serve(self, call: CallDriver, readopted: bool) -> None:
        try:
            await call.run(readopted)
        finally:
            if self.calls.get(call.channel_id) is call:
                del self.calls[call.channel_id]
        await self._forget(call.channel_id)  # kept when cancelled

    async def _unavailable(self, channel_id: str, exten: str) -> None:
        """Polite message and hangup, from the dialplan's fallback context."""
        try:
            await self.client.continue_in_dialplan(channel_id, self.config.fallback_context,
                                                   exten)
        except (AriError, OSError):
            await self._hangup_quietly(channel_id)

    async def _hangup_quietly(self, channel_id: str) -> None:
        with contextlib.suppress(AriError, OSError):
            await self.client.hangup(channel_id)

    # ------------------------------------------------------------------ re-adoption

    async def readopt(self) -> None:
        live = await self.client.application_channels()
        for call in list(self.calls.values()):
            call.post(Resync())  # re-reads the channel: a 404 delivers HungUp
        recorded = await self.store.channel_ids(self.name)
        for channel_id in live - set(self.calls) - set(self.legs) - set(self._pending):
            record = await self.store.load(self.name, channel_id)
            if record is not None and record.owner:
                log.info("hanging up an orphaned dial leg", extra={"call_id": channel_id})
                await self._hangup_quietly(channel_id)
                await self.store.delete(self.name, channel_id)
            elif record is not None:
                await self._start_call(record.info, readopted=True)
            else:
                await self._adopt_unrecorded(channel_id)
        for channel_id in recorded - live:
            if channel_id not in self.calls and channel_id not in self.legs:
                await self._ended_unseen(channel_id)

    async def _adopt_unrecorded(self, channel_id: str) -> None:
        """A channel in the application whose StasisStart no worker saw: a new call."""
        try:
            channel = await self.client.channel(channel_id)
        except AriError as exc:
            if exc.status == 404:
                return
            raise
        app_data = str((channel.get("dialplan") or {}).get("app_data", "")).split(",")
        log.info("adopting a channel found in the application", extra={"call_id": channel_id})
        await self._start_call(self._call_info(channel, app_data[1:2]))

    async def _ended_unseen(self, channel_id: str) -> None:
        """A call recorded by a worker that died, which ended while no worker watched it:
        ``on_call_lost`` records it (its CDR), then the record goes."""
        record = await self.store.load(self.name, channel_id)
        if record is not None and not record.owner and self.on_call_lost is not None:
            log.info("a call ended while no worker watched it", extra={"call_id": channel_id})
            self.on_call_lost(record)
        await self._forget(channel_id)

    async def _forget(self, channel_id: str) -> None:
        """Delete an ended call's record once its CDR is in Redis: a worker killed before
        that leaves the record, and the next one records the call as lost."""
        if self.cdrs_durable is not None:
            await self.cdrs_durable()
        await self.store.delete(self.name, channel_id)
