"""One call on Asterisk: runs its call flow in its own task and maps commands to ARI.

The driver talks to ARI only through an :class:`~appserver.asterisk.port.AriPort` and is told
the rest by its constructor: the call, its flow, a :class:`DriverConfig`, the node's
:class:`LegRegistry` and the queue runtime's ``on_enqueue``. The node's link routes raw ARI
events into :meth:`CallDriver.post`; all work for the call (calling the flow, REST requests,
timers) happens in :meth:`CallDriver.run`, the call's own task, so a slow call never holds up
the events reader or other calls.

A supervisor (``Supervise``) is a leg dialled with the SIP template into the application.
Listening and whispering go through a snoop channel on the dialled party's leg (``spy=both``:
the supervisor hears both sides; ``whisper=out``: the party hears them, the caller never
does), in a mixing bridge of the supervisor's own; barging puts the supervisor into the
call's bridge (a three-way call). A mode change replaces the snoop or moves the leg between
the two bridges; the supervisor's leg stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from appserver.asterisk.media import HANGUP_REASONS, cause_name, prompt_media
from appserver.asterisk.port import AriError, AriPort
from appserver.logs import call_logger
from ivr.calls import (
    Answer,
    Answered,
    CallFlow,
    CallInfo,
    CancelTimer,
    Command,
    Dial,
    DialResult,
    Dtmf,
    EndDial,
    EndSupervise,
    Enqueue,
    Event,
    Hangup,
    Hold,
    HungUp,
    PauseRecording,
    Play,
    PlayFinished,
    QueueResult,
    Record,
    RecordFinished,
    RecordingStarted,
    RecordingStopped,
    ResumeRecording,
    SetVariable,
    StartMoh,
    StartRecording,
    StartTimer,
    StopMoh,
    StopPlay,
    StopRecording,
    Supervise,
    TimerFired,
    Transfer,
    TransferResult,
    Unhold,
)

log = logging.getLogger(__name__)

EnqueueHandler = Callable[[CallInfo, Enqueue], Awaitable[None] | None]
HANGUP_EVENTS = ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed")
BRIDGE_SEPARATOR = "~"  # a call's bridges are <channel id>~<n>: their events find the call
_TIMER_GENERATIONS = itertools.count(1)  # tells a timer's tick from a restarted timer's
_RUNNING: set[asyncio.Future[None]] = set()  # requests sent without waiting, while they run


@dataclass(frozen=True)
class DriverConfig:
    dial_template: str = "PJSIP/{target}"
    sip_template: str = "PJSIP/kamailio/{target}"  # for Dial(kind="sip"): target is a SIP URI
    transfer_context: str = "callyard-transfer"  # where a Transfer continues
    fallback_context: str = "callyard-unavailable"  # polite endings: s (error), noservice


@dataclass(slots=True)
class ChannelEvent:
    """A raw ARI event about the call's own channel or its playbacks."""

    msg: dict[str, Any]


@dataclass(slots=True)
class LegEvent:
    """A raw ARI event about the call's outbound dial leg."""

    msg: dict[str, Any]


@dataclass(slots=True)
class Resync:
    """After a reconnect: events may have been lost; re-read channel and playback state."""


@dataclass(slots=True)
class _TimerTick:
    name: str
    generation: int


@dataclass(slots=True)
class _DialState:
    target: str
    leg_id: str
    answered: bool = False
    bridge_id: str = ""
    last_status: str = ""
    guard: asyncio.TimerHandle | None = None
    held: bool = False  # the caller is out of the bridge, hearing music on hold
    ended_by_flow: bool = False  # EndDial hung the leg up


@dataclass(slots=True)
class _Supervision:
    leg_id: str  # the supervisor's leg
    mode: str
    answered: bool = False
    bridge_id: str = ""  # the supervisor's own bridge, with the snoop while not barging
    snoop_id: str = ""  # the snoop channel on the party's leg, "" when none (barging)
    barging: bool = False  # the leg is in the call's bridge


SNOOP_WHISPER = {"listen": "none", "whisper": "out"}  # on the party's leg; barge: no snoop


class LegRegistry(Protocol):
    """The node a call runs on: routes a dial leg's events to the call that dialed it, and
    records the leg (so a restarted worker hangs up a leg whose caller it cannot re-adopt)."""

    async def add_leg(self, leg_id: str, call: CallDriver) -> None: ...

    async def drop_leg(self, leg_id: str) -> None: ...


class CallDriver:
    __slots__ = (
        "_bridges", "_inbox", "_settled", "_timers", "_unawaited", "_unawaited_variables",
        "_wakeup",
        "call_recording", "call_recording_paused", "channel_id",
        "config", "dial", "finished", "flow", "handed_away", "hangup_after", "hungup_delivered",
        "info", "legs",
        "log", "on_enqueue", "playbacks", "port", "recordings", "stopping", "supervision",
        "waiting_queue",
    )  # thousands of calls per worker: no per-call __dict__

    def __init__(self, info: CallInfo, flow: CallFlow, port: AriPort, config: DriverConfig,
                 legs: LegRegistry, on_enqueue: EnqueueHandler | None = None) -> None:
        self.info = info
        self.flow = flow
        self.port = port
        self.config = config
        self.legs = legs
        self.on_enqueue = on_enqueue
        self.channel_id = info.call_id
        self._inbox: list[Any] = []  # events and internal items, oldest first (see post)
        self._wakeup: asyncio.Future[None] | None = None  # set while run() waits for items
        self.log = call_logger(log, info.call_id, node=info.node)
        self.finished = False  # nothing more to do for this call
        self.handed_away = False  # after Hangup / Transfer
        self.hungup_delivered = False
        self.waiting_queue = False
        self.playbacks: dict[str, str] = {}  # ARI playback id -> flow play_id
        self.stopping: set[str] = set()  # ARI playback ids we asked to stop
        self.hangup_after: tuple[str, str] | None = None  # Hangup(after_play): play_id, cause
        # ARI recording name -> flow record_id (Record), "" for the call's StartRecording
        self.recordings: dict[str, str] = {}
        self.call_recording = ""  # StartRecording's name until StopRecording
        self.call_recording_paused = False  # paused before the bridge (and its record) began
        self._bridges = 0
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}
        self.dial: _DialState | None = None
        self.supervision: _Supervision | None = None
        self._unawaited = 0  # requests sent without waiting, still in flight
        self._unawaited_variables = 0  # those of them setting variables
        # Resolved as one of them ends, while the call's task waits for them (_wait_unawaited)
        self._settled: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ task

    def post(self, item: Any) -> None:
        """Queue an item (an ARI event, a flow event, a timer tick ...) for the call's task.
        A list and a future, not an asyncio.Queue: a fraction of its memory per call."""
        self._inbox.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _next(self) -> Any:
        while not self._inbox:
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        self._wakeup = None
        return self._inbox.pop(0)

    async def run(self, readopted: bool = False) -> None:
        """The call's task: until the call is over here. Cancelled (the worker stops), it
        leaves the channel and the dial leg as they are, for the next worker to re-adopt."""
        cancelled = False
        try:
            if readopted:
                self.log.info("re-adopted channel: restarting its call flow")
            await self._apply(_commands(self.flow.start(self.info)))
            self._check_flow_done()
            while not self.finished:
                item = await self._next()
                await self._process(item)
                self._check_flow_done()
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception:
            self.log.exception("call flow failed; ending the call politely")
            await self._fail_politely()
        finally:
            self._cancel_all_timers()
            if not cancelled:
                await self._cleanup()

    def _check_flow_done(self) -> None:
        """A flow that is done without handing the call away would leave the caller in
        silence: hang up for it (unless a dial or queue result is still to come)."""
        if (
            not self.finished
            and not self.handed_away
            and getattr(self.flow, "done", False)
            and self.dial is None
            and not self.waiting_queue
        ):
            self.log.warning("call flow is done but did not hang up; hanging up")
            self.post(_FlowDoneHangup())

    async def _process(self, item: Any) -> None:
        match item:
            case ChannelEvent(msg):
                await self._on_channel_event(msg)
            case LegEvent(msg):
                await self._on_leg_event(msg)
            case _TimerTick(name, generation):
                current = self._timers.get(name)
                if current and current[0] == generation:
                    del self._timers[name]
                    await self._deliver(TimerFired(name))
            case Resync():
                await self._resync()
            case _RequestFailed(cmd, status, text):
                if not self.finished:
                    await self._on_http_error(cmd, status, text)
            case _FlowDoneHangup():
                if not self.finished and not self.handed_away:
                    await self._execute(Hangup())
            case _:
                await self._deliver(item)

    async def _deliver(self, event: Event) -> None:
        """Hand one event to the flow and execute what it returns."""
        if self.finished or (self.handed_away and not isinstance(event, HungUp)):
            return
        if isinstance(event, HungUp):
            if self.hungup_delivered:
                return
            self.hungup_delivered = True
            self._cancel_all_timers()
        if isinstance(event, QueueResult):
            self.waiting_queue = False
        commands = _commands(self.flow.handle(event))
        if isinstance(event, HungUp):
            self.finished = True  # commands after the caller hung up are ignored
            return
        await self._apply(commands)

    async def _apply(self, commands: list[Command]) -> None:
        """Execute commands in order. StopPlay and SetVariable are sent without waiting for
        Asterisk's answer (their errors come back through the queue); any other request
        first waits for them, so the dialplan, a hangup or a bridge never overtakes a
        variable the flow set before. A Play waits only for variables: Asterisk sets a
        variable on the channel's thread, behind a playback that got there first (the
        variable would wait for the prompt's end, and hold an HTTP connection meanwhile)."""
        for command in commands:
            if self.finished or self.handed_away:
                return
            if isinstance(command, (StopPlay, SetVariable)):
                self._send_unawaited(command)
                continue
            if isinstance(command, Play):
                if self._unawaited_variables:
                    await self._wait_unawaited(variables_only=True)
            elif self._unawaited and not isinstance(command, (StartTimer, CancelTimer)):
                await self._wait_unawaited()
            await self._execute(command)

    def _send_unawaited(self, cmd: StopPlay | SetVariable) -> None:
        """The request runs in a task of its own (referenced from one set for the whole
        process while it runs); the call keeps only counts of them, and its task waits for
        them with one future (:meth:`_wait_unawaited`), not per-call sets of tasks, their
        done-callbacks and ``asyncio.wait``."""
        if isinstance(cmd, StopPlay):
            playback_ids = self._mark_stopping(cmd)
            if not playback_ids:
                return
            request = self._stop_requests(playback_ids)
        else:
            request = self._set_variable(cmd)
            self._unawaited_variables += 1
        self._unawaited += 1
        _RUNNING.add(asyncio.ensure_future(self._report_failure(cmd, request)))

    async def _wait_unawaited(self, variables_only: bool = False) -> None:
        """Until the requests sent without waiting (those setting variables only) ended."""
        while self._unawaited_variables if variables_only else self._unawaited:
            if self._settled is None or self._settled.done():
                self._settled = asyncio.get_running_loop().create_future()
            await self._settled

    async def _set_variable(self, cmd: SetVariable) -> None:
        await self.port.set_variable(self.channel_id, cmd.name, cmd.value)

    async def _report_failure(self, cmd: Command, request: Awaitable[None]) -> None:
        try:
            await request
        except AriError as exc:
            self.post(_RequestFailed(cmd, exc.status, exc.text))
        except OSError as exc:
            self.post(_RequestFailed(cmd, 0, str(exc) or type(exc).__name__))
        finally:
            _RUNNING.discard(asyncio.current_task())
            self._unawaited -= 1
            if isinstance(cmd, SetVariable):
                self._unawaited_variables -= 1
            settled, self._settled = self._settled, None
            if settled is not None and not settled.done():
                settled.set_result(None)

    # ------------------------------------------------------------------ commands

    async def _execute(self, cmd: Command) -> None:
        """One command, awaited (StopPlay and SetVariable never come here: see _apply)."""
        cid = self.channel_id
        try:
            match cmd:
                case Answer():
                    await self.port.answer(cid)
                    self.post(Answered())
                case Play():
                    await self._play(cmd)
                case StartTimer(name, seconds):
                    self._start_timer(name, seconds)
                case CancelTimer(name):
                    self._cancel_timer(name)
                case StartMoh(moh_class):
                    await self.port.start_moh(cid, moh_class)
                case StopMoh():
                    await self.port.stop_moh(cid)
                case Enqueue():
                    await self._enqueue(cmd)
                case Dial():
                    await self._dial(cmd)
                case Record():
                    await self._record(cmd)
                case StartRecording(name):
                    self.call_recording = name
                    self.call_recording_paused = False
                    if self.dial is not None and self.dial.bridge_id:
                        await self._record_bridge(self.dial.bridge_id)
                case PauseRecording() | ResumeRecording() | StopRecording():
                    await self._live_recording(cmd)
                case Hold():
                    await self._hold(cmd)
                case Unhold():
                    await self._unhold(cmd)
                case EndDial():
                    await self._end_dial()
                case Supervise():
                    await self._supervise(cmd)
                case EndSupervise():
                    await self._end_supervision()
                case Transfer():
                    await self._transfer(cmd)
                case Hangup(cause, after_play) if after_play in self.playbacks.values():
                    self.handed_away = True  # hung up on that play's PlaybackFinished
                    self.hangup_after = (after_play, cause)
                case Hangup(cause):
                    self.handed_away = True
                    await self._hang_up(cause)
                    self.finished = True
                case _:
                    self.log.warning("unsupported command ignored", extra={"command": repr(cmd)})
        except AriError as exc:
            await self._on_http_error(cmd, exc.status, exc.text)
        except OSError as exc:  # no answer from Asterisk
            await self._on_http_error(cmd, 0, str(exc) or type(exc).__name__)

    async def _hang_up(self, cause: str) -> None:
        """DELETE the call's channel with ``cause``'s reason; one already gone (404) counts as
        hung up. Other errors propagate: the ``Hangup`` command's go to :meth:`_on_http_error`,
        a ``Hangup(after_play)``'s (on its play's end) deliver ``HungUp`` at once."""
        await _unless_gone(self.port.hangup(self.channel_id, HANGUP_REASONS.get(cause, "normal")))

    async def _on_http_error(self, cmd: Command, status: int, text: str) -> None:
        if isinstance(cmd, Transfer) and status not in (0, 404):
            self.handed_away = False
            self.log.warning("transfer refused", extra={"status": status, "error": text})
            await self._deliver(TransferResult(cmd.destination, ok=False, cause=f"HTTP {status}"))
            return
        if status in (404, 409):
            # The channel is gone or no longer ours: the caller hung up (events lost).
            self.log.info("channel gone; ending the call", extra={"status": status,
                                                                  "command": type(cmd).__name__})
            self.handed_away = False
            await self._deliver(HungUp("NORMAL_CLEARING"))
            self.finished = True
            return
        self.log.error("ARI request failed; ending the call",
                       extra={"status": status, "error": text, "command": type(cmd).__name__})
        self.finished = True
        self.handed_away = False
        if not self.hungup_delivered:
            self.hungup_delivered = True
            self.flow.handle(HungUp("ARI_ERROR"))
        await self._quietly(self.port.hangup(self.channel_id))

    async def _quietly(self, request: Awaitable[Any]) -> None:
        with contextlib.suppress(AriError, OSError):
            await request

    async def _record(self, cmd: Record) -> None:
        """ARI takes one terminator key (``#``, ``*``), ``any`` or ``none``."""
        keys = cmd.terminators
        terminate_on = keys if keys in ("#", "*") else ("any" if len(keys) > 1 else "none")
        self.recordings[cmd.name] = cmd.record_id
        try:
            await self.port.record(self.channel_id, cmd.name, cmd.max_seconds, cmd.beep,
                                   terminate_on)
        except AriError as exc:
            if exc.status in (404, 409):
                raise  # the channel is gone or no longer ours: handled as a hangup
            self.recordings.pop(cmd.name, None)
            self.log.error("recording refused", extra={"status": exc.status, "error": exc.text})
            await self._deliver(RecordFinished(cmd.record_id, "failed"))

    async def _record_bridge(self, bridge_id: str) -> None:
        """Record the bridge the caller talks in (``StartRecording`` before or during it)."""
        name = self.call_recording
        try:
            await self.port.record_bridge(bridge_id, name)
        except AriError as exc:
            self.log.error("call recording refused", extra={"status": exc.status,
                                                            "error": exc.text})
            return
        self.recordings[name] = ""
        if self.call_recording_paused:  # the agent paused it before the bridge existed
            with contextlib.suppress(AriError):
                await self.port.live_recording(name, "pause")

    async def _live_recording(self, cmd: PauseRecording | ResumeRecording | StopRecording
                              ) -> None:
        name = self.call_recording
        if not name:
            self.log.info("%s ignored: no recording", type(cmd).__name__)
            return
        if isinstance(cmd, StopRecording):
            self.call_recording = ""
        operation = {PauseRecording: "pause", ResumeRecording: "unpause",
                     StopRecording: "stop"}[type(cmd)]
        if name in self.recordings:  # running: else it had not begun (no bridge yet)
            with contextlib.suppress(AriError):  # 404: it ended meanwhile
                await self.port.live_recording(name, operation)
        else:  # applied as the recording begins
            self.call_recording_paused = isinstance(cmd, PauseRecording)

    async def _play(self, cmd: Play) -> None:
        media = []
        for prompt in cmd.prompts:
            uri = prompt_media(prompt)
            if uri is None:
                self.log.warning("prompt cannot be played on Asterisk; skipped",
                                 extra={"prompt": f"{prompt.kind}:{prompt.value}"})
            else:
                media.append(uri)
        if not media:
            self.post(PlayFinished(cmd.play_id, "failed"))
            return
        playback_id = uuid.uuid4().hex
        self.playbacks[playback_id] = cmd.play_id
        try:
            await self.port.play(self.channel_id, playback_id, media, cmd.language)
        except AriError:
            self.playbacks.pop(playback_id, None)
            raise

    def _mark_stopping(self, cmd: StopPlay) -> list[str]:
        """The playbacks to stop for ``cmd``, newest first, each marked as being stopped:
        every one still outstanding, as FreeSWITCH's ``uuid_break all`` (ARI would stop only
        the one named, and an older prompt still playing would hold up the rest); none when
        ``cmd``'s play is unknown or already finished."""
        if cmd.play_id not in self.playbacks.values():
            return []
        return self._mark_all_stopping()

    def _mark_all_stopping(self) -> list[str]:
        ids = [p for p in reversed(self.playbacks) if p not in self.stopping]
        self.stopping.update(ids)
        return ids

    async def _stop_requests(self, playback_ids: list[str]) -> None:
        """Queued ones first (newest first), so none starts when the playing one stops. A
        404 means it finished meanwhile: its PlaybackFinished is on the way."""
        for playback_id in playback_ids:
            await _unless_gone(self.port.stop_playback(playback_id))

    def _start_timer(self, name: str, seconds: float) -> None:
        self._cancel_timer(name)
        generation = next(_TIMER_GENERATIONS)
        handle = asyncio.get_running_loop().call_later(
            max(0.0, seconds), self.post, _TimerTick(name, generation)
        )
        self._timers[name] = (generation, handle)

    def _cancel_timer(self, name: str) -> None:
        current = self._timers.pop(name, None)
        if current:
            current[1].cancel()

    def _cancel_all_timers(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _enqueue(self, cmd: Enqueue) -> None:
        handler = self.on_enqueue
        if handler is None:
            self.post(QueueResult(cmd.queue, "failed", "no queue runtime"))
            return
        self.waiting_queue = True
        result = handler(self.info, cmd)
        if inspect.isawaitable(result):
            await result

    async def _transfer(self, cmd: Transfer) -> None:
        if self.dial is not None and self.dial.held:
            # MOH started over ARI would follow the caller into the dialplan.
            await self._quietly(self.port.stop_moh(self.channel_id))
        # Asterisk continues in the dialplan only once the channel's playbacks are over:
        # break them off, as the FreeSWITCH driver does.
        await self._stop_requests(self._mark_all_stopping())
        self.handed_away = True
        await self.port.continue_in_dialplan(self.channel_id, self.config.transfer_context,
                                             cmd.destination)
        self.log.info("transferred", extra={"destination": cmd.destination})
        self.finished = True
        # The engine took the call: the flow's last event (what it returns is moot).
        self.flow.handle(TransferResult(cmd.destination, ok=True))

    # ------------------------------------------------------------------ dial

    async def _dial(self, cmd: Dial) -> None:
        if self.dial is not None:
            await self._deliver(DialResult(cmd.target, "failed", "a dial is already running"))
            return
        config = self.config
        try:
            template = config.sip_template if cmd.kind == "sip" else config.dial_template
            endpoint = template.format(target=cmd.target, kind=cmd.kind)
        except (KeyError, IndexError, ValueError) as exc:
            self.log.error("bad dial template", extra={"error": str(exc)})
            await self._deliver(DialResult(cmd.target, "failed", "bad dial template"))
            return
        leg_id = f"{uuid.uuid4().hex}"
        self.dial = _DialState(cmd.target, leg_id)
        await self.legs.add_leg(leg_id, self)
        caller_id = f'"{self.info.caller_name}" <{self.info.caller}>'
        try:
            await self.port.originate(
                leg_id, endpoint, app_args=f"dial,{self.channel_id}",
                originator=self.channel_id, caller_id=caller_id,
                timeout=max(1, math.ceil(cmd.timeout)),
            )
        except AriError as exc:
            self.log.warning("originate refused", extra={"status": exc.status,
                                                         "endpoint": endpoint})
            await self._leg_over(None, f"HTTP {exc.status}")
            return
        self.log.info("dialing", extra={"endpoint": endpoint, "leg": leg_id})
        # Guard in case the engine never reports the outcome.
        self.dial.guard = asyncio.get_running_loop().call_later(
            cmd.timeout + 5.0, self.post, LegEvent({"type": "_DialGuard", "leg": leg_id})
        )

    # ------------------------------------------------------------------ hold / end dial

    def _running_dial(self, cmd: Command) -> _DialState | None:
        """The running dial (ringing or connected), else None (logged)."""
        if self.dial is None:
            self.log.info("no dial running; command ignored",
                          extra={"command": type(cmd).__name__})
        return self.dial

    async def _bridge_op(self, cmd: Command, request: Awaitable[Any]) -> bool:
        """Add the caller to / remove it from the dial's bridge. A 400 ("Channel not found")
        means the caller is gone; 404/409/422 (bridge gone, not ours, caller not in it) mean
        the dial is ending: its events follow. True when the request succeeded."""
        try:
            await request
        except AriError as exc:
            if exc.status == 400:
                await self._on_http_error(cmd, 404, exc.text)
            else:
                self.log.warning("bridge refused the caller; command ignored",
                                 extra={"command": type(cmd).__name__, "status": exc.status,
                                        "error": exc.text})
            return False
        return True

    async def _hold(self, cmd: Hold) -> None:
        # While the party still rings the caller is not bridged yet: MOH now, and the
        # bridge takes only the party when it answers (the console may ask that early).
        dial = self._running_dial(cmd)
        if dial is None:
            return
        if dial.held:
            self.log.info("already on hold; Hold ignored")
            return
        if dial.bridge_id and not await self._bridge_op(
                cmd, self.port.remove_from_bridge(dial.bridge_id, self.channel_id)):
            return
        dial.held = True
        await self.port.start_moh(self.channel_id, cmd.moh_class)

    async def _unhold(self, cmd: Unhold) -> None:
        dial = self._running_dial(cmd)
        if dial is None:
            return
        if not dial.held:
            self.log.info("not on hold; Unhold ignored")
            return
        await self.port.stop_moh(self.channel_id)
        dial.held = False
        if dial.bridge_id:
            await self._bridge_op(cmd, self.port.add_to_bridge(dial.bridge_id, [self.channel_id]))

    async def _end_dial(self) -> None:
        dial = self.dial
        if dial is None:
            self.log.info("no dial running; EndDial ignored")
            return
        dial.ended_by_flow = True
        # 404: the leg ended meanwhile; its ChannelDestroyed (and so DialResult) is on the way.
        await _unless_gone(self.port.hangup(dial.leg_id))
        self.log.info("dialed party hung up by the call flow", extra={"leg": dial.leg_id})

    async def _on_leg_event(self, msg: dict[str, Any]) -> None:
        dial = self.dial
        kind = msg.get("type")
        sup = self.supervision
        channel_id = _channel_id(msg)
        if sup is not None and channel_id in (sup.leg_id, sup.snoop_id):
            await self._on_supervision_event(sup, msg)
            return
        if dial is None or channel_id not in ("", dial.leg_id):
            return  # also a supervisor's leg or snoop reporting after it was let go
        if kind == "StasisStart" and not dial.answered:
            dial.answered = True
            if dial.guard:
                dial.guard.cancel()
            await self._bridge_leg(dial)
        elif kind == "Dial":
            dial.last_status = str(msg.get("dialstatus", ""))
        elif kind == "ChannelDestroyed":
            await self._leg_over(msg.get("cause"), str(msg.get("cause_txt", "")))
        elif kind == "_DialGuard" and msg.get("leg") == dial.leg_id and not dial.answered:
            await self._quietly(self.port.hangup(dial.leg_id))
            await self._leg_over(19, "no answer from the engine")

    async def _bridge_leg(self, dial: _DialState) -> None:
        self._bridges += 1
        bridge_id = f"{self.channel_id}{BRIDGE_SEPARATOR}{self._bridges}"
        try:
            await self.port.create_bridge(bridge_id, f"callyard-{self.channel_id}")
            dial.bridge_id = bridge_id
            # a caller put on hold while the party rang stays out until Unhold
            members = [dial.leg_id] if dial.held else [self.channel_id, dial.leg_id]
            await self.port.add_to_bridge(bridge_id, members)
            if self.call_recording:
                await self._record_bridge(bridge_id)
        except AriError as exc:
            self.log.warning("could not bridge the dialed party", extra={"status": exc.status})
            await self._quietly(self.port.hangup(dial.leg_id))
            return
        sup = self.supervision
        if sup is not None and sup.answered:  # the supervisor answered first: attach now
            await self._supervision_step(self._supervise_mode(sup, sup.mode))

    async def _leg_over(self, cause: object, cause_txt: str) -> None:
        dial = self.dial
        if dial is None:
            return
        await self._end_supervision()  # nobody left to supervise
        self.dial = None
        if dial.guard:
            dial.guard.cancel()
        await self.legs.drop_leg(dial.leg_id)
        if dial.bridge_id:
            await self._quietly(self.port.destroy_bridge(dial.bridge_id))
        if dial.held:
            await self._quietly(self.port.stop_moh(self.channel_id))
        if dial.answered:
            outcome = "answered"
        elif dial.ended_by_flow:
            outcome, cause, cause_txt = "no_answer", None, "ORIGINATOR_CANCEL"
        elif cause == 17 or dial.last_status == "BUSY":
            outcome = "busy"
        elif cause in (18, 19) or dial.last_status == "NOANSWER":
            outcome = "no_answer"
        else:
            outcome = "failed"
        detail = cause_name(cause) if isinstance(cause, int) else cause_txt
        await self._deliver(DialResult(dial.target, outcome, detail))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self, cmd: Supervise) -> None:
        dial = self._running_dial(cmd)
        if dial is None:
            return
        sup = self.supervision
        if sup is not None and not cmd.join:
            if sup.answered and cmd.mode != sup.mode:
                await self._supervision_step(self._supervise_mode(sup, cmd.mode))
            sup.mode = cmd.mode  # while it rings: the mode it gets on answer
            return
        await self._end_supervision()
        try:
            endpoint = self.config.sip_template.format(target=cmd.target, kind="sip")
        except (KeyError, IndexError, ValueError) as exc:
            self.log.error("bad dial template", extra={"error": str(exc)})
            return
        sup = self.supervision = _Supervision(uuid.uuid4().hex, cmd.mode)
        await self.legs.add_leg(sup.leg_id, self)
        try:
            await self.port.originate(
                sup.leg_id, endpoint, app_args=f"supervise,{self.channel_id}",
                originator=self.channel_id, caller_id=f'"{self.info.caller_name}" '
                f"<{self.info.caller}>", timeout=30)
        except AriError as exc:
            self.log.warning("supervisor not dialled", extra={"status": exc.status,
                                                              "endpoint": endpoint})
            await self._end_supervision()
            return
        self.log.info("supervisor dialled", extra={"leg": sup.leg_id, "mode": cmd.mode})

    async def _on_supervision_event(self, sup: _Supervision, msg: dict[str, Any]) -> None:
        kind, channel_id = msg.get("type"), _channel_id(msg)
        if kind == "StasisStart" and channel_id == sup.leg_id and not sup.answered:
            sup.answered = True
            await self._supervision_step(self._supervise_mode(sup, sup.mode))
        elif kind == "StasisStart" and channel_id == sup.snoop_id:
            await self._supervision_step(self.port.add_to_bridge(sup.bridge_id, [sup.snoop_id]))
        elif kind == "ChannelDestroyed" and channel_id == sup.leg_id:
            self.log.info("supervisor left", extra={"leg": sup.leg_id})
            await self._end_supervision()
        elif kind == "ChannelDestroyed":  # the snoop, replaced or gone with the party's leg
            await self.legs.drop_leg(channel_id)

    async def _supervision_step(self, request: Awaitable[Any]) -> None:
        """A request for the supervisor's leg; refused, it ends the supervision, never the
        call (a 404 on the party's leg: the dial is ending, its events follow)."""
        try:
            await request
        except (AriError, OSError) as exc:
            self.log.warning("supervision ended: %s", exc)
            await self._end_supervision()

    async def _supervise_mode(self, sup: _Supervision, mode: str) -> None:
        """Attach the answered supervisor's leg to the call in ``mode``."""
        dial = self.dial
        if dial is None or not dial.bridge_id:
            return
        await self._drop_snoop(sup)
        if mode == "barge":
            if sup.bridge_id:
                await self._quietly(self.port.remove_from_bridge(sup.bridge_id, sup.leg_id))
            await self.port.add_to_bridge(dial.bridge_id, [sup.leg_id])
            sup.barging = True
            return
        if sup.barging:
            await self._quietly(self.port.remove_from_bridge(dial.bridge_id, sup.leg_id))
            sup.barging = False
        if not sup.bridge_id:
            sup.bridge_id = uuid.uuid4().hex
            await self.port.create_bridge(sup.bridge_id, f"callyard-supervise-{self.channel_id}")
        await self.port.add_to_bridge(sup.bridge_id, [sup.leg_id])
        sup.snoop_id = uuid.uuid4().hex
        await self.legs.add_leg(sup.snoop_id, self)
        await self.port.snoop(dial.leg_id, sup.snoop_id, spy="both",
                              whisper=SNOOP_WHISPER[mode], app_args=f"supervise,{self.channel_id}")

    async def _drop_snoop(self, sup: _Supervision) -> None:
        if sup.snoop_id:
            snoop_id, sup.snoop_id = sup.snoop_id, ""
            await _unless_gone(self.port.hangup(snoop_id))
            await self.legs.drop_leg(snoop_id)

    async def _end_supervision(self) -> None:
        sup, self.supervision = self.supervision, None
        if sup is None:
            return
        await self._quietly(self._drop_snoop(sup))
        await self._quietly(self.port.hangup(sup.leg_id))
        if sup.bridge_id:
            await self._quietly(self.port.destroy_bridge(sup.bridge_id))
        await self.legs.drop_leg(sup.leg_id)

    # ------------------------------------------------------------------ channel events

    async def _on_channel_event(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ChannelDtmfReceived":
            digit = msg.get("digit")
            if isinstance(digit, str) and digit:
                await self._deliver(Dtmf(digit))
        elif kind == "PlaybackFinished":
            playback = msg.get("playback") or {}
            playback_id = playback.get("id", "")
            play_id = self.playbacks.pop(playback_id, None)
            if play_id is None:
                return
            if self.hangup_after is not None and self.hangup_after[0] == play_id:
                # the channel's end (below) then tells the flow, as the caller's would
                try:
                    await self._hang_up(self.hangup_after[1])
                except (AriError, OSError) as exc:
                    self.log.error("hangup after the last prompt failed",
                                   extra={"error": str(exc) or type(exc).__name__})
                    await self._deliver(HungUp(self.hangup_after[1]))
                    self.finished = True
                return
            if playback_id in self.stopping:
                self.stopping.discard(playback_id)
                status = "stopped"
            else:
                status = "failed" if playback.get("state") == "failed" else "done"
            await self._deliver(PlayFinished(play_id, status))  # type: ignore[arg-type]
        elif kind == "RecordingStarted":
            name = str((msg.get("recording") or {}).get("name", ""))
            if self.recordings.get(name) == "":
                await self._deliver(RecordingStarted(name))
        elif kind in ("RecordingFinished", "RecordingFailed"):
            recording = msg.get("recording") or {}
            name = str(recording.get("name", ""))
            record_id = self.recordings.pop(name, None)
            if record_id == "":  # the call's recording (StartRecording)
                seconds = recording.get("duration")
                await self._deliver(RecordingStopped(
                    name, float(seconds) if isinstance(seconds, int | float) else 0.0))
            elif record_id is not None:
                done = kind == "RecordingFinished" and recording.get("state") == "done"
                seconds = recording.get("duration")
                await self._deliver(RecordFinished(
                    record_id, "done" if done else "failed",
                    float(seconds) if isinstance(seconds, int | float) else 0.0))
        elif kind in HANGUP_EVENTS:
            if self.handed_away:
                if self.hangup_after is not None:  # Hangup(after_play): the flow hears the end
                    await self._deliver(HungUp(cause_name(msg.get("cause", 16))))
                self.finished = True
                return
            await self._deliver(HungUp(cause_name(msg.get("cause", 16))))
        # Other events (PlaybackStarted, ChannelVarset, bridge events ...) need no action.

    # ------------------------------------------------------------------ re-adoption

    async def _resync(self) -> None:
        if await _gone(self.port.channel(self.channel_id)):
            await self._deliver(HungUp("NORMAL_CLEARING"))
            self.finished = True
            return
        for playback_id in list(self.playbacks):
            if await _gone(self.port.playback(playback_id)):  # finished during the gap
                await self._on_channel_event({
                    "type": "PlaybackFinished",
                    "playback": {"id": playback_id, "state": "done"},
                })
        if self.dial is not None and await _gone(self.port.channel(self.dial.leg_id)):
            await self._leg_over(None, "ended while disconnected")

    # ------------------------------------------------------------------ endings

    async def _fail_politely(self) -> None:
        self.finished = True
        if self.hungup_delivered or self.handed_away:
            return
        try:
            await self.port.continue_in_dialplan(self.channel_id, self.config.fallback_context,
                                                 "s")
        except (AriError, OSError):
            await self._quietly(self.port.hangup(self.channel_id))

    async def _cleanup(self) -> None:
        if self._unawaited:
            await self._wait_unawaited()
        await self._end_supervision()
        if self.dial is not None:
            dial, self.dial = self.dial, None
            if dial.guard:
                dial.guard.cancel()
            await self._quietly(self.port.hangup(dial.leg_id))
            if dial.bridge_id:
                await self._quietly(self.port.destroy_bridge(dial.bridge_id))
            await self.legs.drop_leg(dial.leg_id)


@dataclass(slots=True)
class _FlowDoneHangup:
    pass


@dataclass(slots=True)
class _RequestFailed:
    """A request sent without waiting (StopPlay, SetVariable) failed."""

    cmd: Command
    status: int  # 0: no HTTP answer
    text: str


def _channel_id(msg: dict[str, Any]) -> str:
    channel = msg.get("channel") or msg.get("peer")
    return str(channel.get("id", "")) if isinstance(channel, dict) else ""


def _commands(result: list[Command] | None) -> list[Command]:
    return list(result or [])


async def _unless_gone(request: Awaitable[None]) -> None:
    """``request``, where a 404 (it is gone already) counts as done."""
    try:
        await request
    except AriError as exc:
        if exc.status != 404:
            raise


async def _gone(request: Awaitable[Any]) -> bool:
    """True when ``request`` (reading a channel or playback) answers 404."""
    try:
        await request
    except AriError as exc:
        if exc.status == 404:
            return True
        raise
    return False
