""":class:`CdrFlow`: wraps a call's flow and emits exactly one CDR when the call ends.

Pure (no I/O): it passes events in and commands out unchanged, notes what matters for the
record (answer, menus entered, queue, agent, dial and transfer outcomes) and hands the
finished :class:`~appserver.cdr.record.CdrRecord` to ``sink`` once, when the call ends:

* the caller hangs up (``HungUp``), or the flow hangs up (``Hangup``), or the engine took
  the flow's ``Transfer`` (``TransferResult(ok=True)``; a refused one is not a transfer);
* the flow raises (disposition ``failed``; the exception propagates to the driver);
* the flow is done without a terminal command (the driver hangs up for it).

A voicemail message the caller left (a ``Record`` for a mailbox, finished or cut short by
the hangup, at least :data:`MIN_MESSAGE_SECONDS` long) goes into ``extra["voicemail"]``
(``mailbox``, ``name``, ``seconds``, ``started_at``) with disposition ``voicemail``;
PostgreSQL files it in ``voicemail_messages`` when the CDR is stored (migration 008).

It is the outermost layer of every call's flow (:mod:`appserver.worker.pipeline`). The
queueing layer inside it keeps the flow's ``Enqueue`` and the ``QueueResult`` it hands back
from the outside: it tells :class:`CdrCalls` instead (``queue_entered`` / ``queue_left``).
A call a worker hands over at shutdown (Asterisk re-adoption) emits nothing there: the
process that finishes the call emits its record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from appserver.cdr.record import CdrRecord
from appserver.queues.caller_flow import CALLBACK_TO_VARIABLE, CALLBACK_VARIABLE
from appserver.queues.model import TakenOver
from ivr.calls import (
    AgentAssigned,
    Answer,
    Answered,
    CallFlow,
    CallInfo,
    Command,
    Dial,
    DialResult,
    Enqueue,
    Event,
    Hangup,
    HungUp,
    QueueMoved,
    QueueResult,
    QueueUpdate,
    Record,
    RecordFinished,
    RecordingStarted,
    RecordingStopped,
    SetVariable,
    SupervisorHangup,
    Transfer,
    TransferResult,
)

CdrSink = Callable[[CdrRecord], None]
MIN_MESSAGE_SECONDS = 1.0  # a shorter voicemail message (a hang-up at the beep) is not kept
log = logging.getLogger("callyard.cdr")

_QUEUE_DISPOSITION = {"answered": "answered", "abandoned": "abandoned", "overflow": "overflow",
                      "timeout": "overflow", "left": "overflow", "failed": "failed"}


class CdrObserver(Protocol):
    """Optional hooks (metrics): a call started, one flow step took ``seconds``, it ended."""

    def call_started(self, call: CallInfo) -> None: ...

    def step(self, call: CallInfo, seconds: float) -> None: ...

    def call_ended(self, call: CallInfo, disposition: str) -> None: ...


class CdrFlow:
    def __init__(self, inner: CallFlow, call: CallInfo, sink: CdrSink, *,
                 observer: CdrObserver | None = None,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.inner = inner
        self.call = call
        self.sink = sink
        self.observer = observer
        self.clock = clock
        self.timer = timer
        self.record: CdrRecord | None = None  # set once, when the call ended
        self.started_at = 0.0
        self.answered_at: float | None = None
        self._answer_sent: float | None = None
        self.menus: list[str] = []
        self.queues: list[str] = []
        self.queue_outcome = ""
        self._callback_to = ""
        self._queue_since: float | None = None  # entered the (first) queue
        self._queue_wait = 0.0
        self._assigned_at: float | None = None
        self.agent: str | None = None
        self._waiting_queue = False  # Enqueue seen from outside: a result is still due
        self._dialing = False
        self._dial_answered = False
        self._transfer_to = ""  # set by Transfer, until the engine refuses it
        self._transferring = False  # Transfer sent, the engine's answer not in yet
        self._caller_cause = ""  # set when the caller hung up
        self._hangup_after_play = ""  # Hangup(after_play)'s cause, until the call ends
        self._taken_from = ""  # the dead worker this call was taken over from
        self._ended_by_supervisor = False
        self._message: dict[str, Any] | None = None  # the voicemail message being left
        self._message_since: float | None = None  # its recording runs since then
        self._recordings: list[dict[str, Any]] = []  # the call's recordings (StartRecording)
        self._recording_since: dict[str, float] = {}  # name -> when the engine began it

    # ------------------------------------------------------------------ CallFlow protocol

    @property
    def done(self) -> bool:
        return self.inner.done

    def start(self, call: CallInfo) -> list[Command]:
        self.call = call
        self.started_at = self.clock()
        if self.observer:
            self.observer.call_started(call)
        return self._step(self.inner.start, call)

    def handle(self, event: Event) -> list[Command]:
        if self.record is not None:
            return self.inner.handle(event) if not isinstance(event, HungUp) else []
        note = _EVENT_NOTES.get(type(event))
        if note is not None:
            note(self, event)
        commands = self._step(self.inner.handle, event)
        if isinstance(event, HungUp):
            if self._hangup_after_play:  # the flow's last prompt ended and the engine hung up
                self._end("flow_hangup", self._hangup_after_play)
            else:
                self._end("hangup", self._caller_cause)
        return commands

    def abandon(self, cause: str) -> None:
        """The worker gives the call up (shutdown grace over): record it as failed now."""
        self._end("failed", cause)

    # ------------------------------------------------------------ what the queueing layer reports

    def queue_entered(self, queue: str) -> None:
        """The flow inside the queueing layer asked for ``queue`` (its ``Enqueue``)."""
        self._enter_queue(queue, self.clock())

    def queue_left(self, result: QueueResult) -> None:
        """The queueing layer hands the flow inside it ``result``: the stay is over."""
        self._note_queue_result(result)

    def queue_taken_over(self, taken: TakenOver) -> None:
        """This worker took the waiting caller over from ``taken.previous_owner`` (it died
        without a record of the call): the record covers the call since it joined the queue
        (the menus from the queue entry, the wait since the join; started and answered at the
        join at the latest, the earliest this worker knows), and says from whom."""
        joined = taken.joined_ms / 1000
        self.started_at = min(self.started_at, joined)
        if self.answered_at is None:
            self.answered_at = joined
        self.menus = [m for m in taken.menu_path.split("/") if m]
        self._enter_queue(taken.queue, joined)
        self._taken_from = taken.previous_owner

    # ------------------------------------------------------------------ observation

    def _step(self, run: Callable[[Any], list[Command]], arg: CallInfo | Event
              ) -> list[Command]:
        """``run(arg)`` (the inner flow's start or handle), timed; notes its commands."""
        began = self.timer()
        try:
            commands = run(arg)
        except Exception as exc:
            self._end("failed", "FLOW_ERROR", error=f"{type(exc).__name__}: {exc}")
            raise
        if self.observer:
            self.observer.step(self.call, self.timer() - began)
        for cmd in commands or []:
            note = _COMMAND_NOTES.get(type(cmd))
            if note is not None:
                note(self, cmd)
                if self.record is not None:
                    break
        if (self.record is None and not self._dialing and not self._waiting_queue
                and not self._transferring and not self._hangup_after_play
                and self.inner.done):
            self._end("hangup", "NORMAL_CLEARING")  # the driver hangs up for the flow
        return commands

    # events in (see _EVENT_NOTES)

    def _note_answered(self, event: Answered) -> None:
        if self.answered_at is None:
            self.answered_at = self.clock()

    def _note_hung_up(self, event: HungUp) -> None:
        self._caller_cause = event.cause or "NORMAL_CLEARING"

    def _note_queue_update(self, event: QueueUpdate) -> None:
        self._enter_queue(event.queue, self.clock())

    def _note_agent_assigned(self, event: AgentAssigned) -> None:
        now = self.clock()
        self._enter_queue(event.queue, now)
        self.agent = event.agent
        self._assigned_at = now

    def _note_dial_result(self, event: DialResult) -> None:
        self._dialing = False
        if event.outcome == "answered":
            self._dial_answered = True
        elif self._assigned_at is not None:  # the agent did not pick up: waits again
            self._assigned_at = None
            self.agent = None

    def _note_queue_result(self, event: QueueResult) -> None:
        self._waiting_queue = False
        self._leave_queue(event, self.clock())

    def _note_record_finished(self, event: RecordFinished) -> None:
        message = self._message
        if message is None or self._message_since is None:
            return
        self._message_since = None
        if event.status == "done":
            message["seconds"] = round(event.seconds, 3)
        else:
            self._message = None

    def _note_recording_started(self, event: RecordingStarted) -> None:
        now = self.clock()
        self._recording_since[event.name] = now
        self._recordings.append({"queue": self.queues[-1] if self.queues else "",
                                 "name": event.name, "started_at": now, "seconds": 0.0})

    def _note_recording_stopped(self, event: RecordingStopped) -> None:
        since = self._recording_since.pop(event.name, None)
        if since is not None:
            self._recording(event.name)["seconds"] = round(
                event.seconds or self.clock() - since, 3)

    def _recording(self, name: str) -> dict[str, Any]:
        return next(r for r in reversed(self._recordings) if r["name"] == name)

    def _note_transfer_result(self, event: TransferResult) -> None:
        if not self._transferring:
            return
        self._transferring = False
        if event.ok:
            self._end("transferred", "NORMAL_CLEARING")
        else:
            self._transfer_to = ""

    # commands out (see _COMMAND_NOTES)

    def _note_answer(self, cmd: Answer) -> None:
        if self._answer_sent is None:
            self._answer_sent = self.clock()

    def _note_set_variable(self, cmd: SetVariable) -> None:
        if cmd.name == "ivr_menu" and (not self.menus or self.menus[-1] != cmd.value):
            self.menus.append(cmd.value)
        elif cmd.name == CALLBACK_TO_VARIABLE:  # the caller left the queue for a callback
            self._callback_to = cmd.value

    def _note_enqueue(self, cmd: Enqueue) -> None:
        self._waiting_queue = True
        self._enter_queue(cmd.queue, self.clock())

    def _note_record(self, cmd: Record) -> None:
        if cmd.mailbox:  # a voicemail message (a later take replaces an earlier one)
            now = self.clock()
            self._message = {"mailbox": cmd.mailbox, "name": cmd.name, "started_at": now,
                             "seconds": 0.0}
            self._message_since = now

    def _note_dial(self, cmd: Dial) -> None:
        self._dialing = True

    def _note_transfer(self, cmd: Transfer) -> None:
        self._transfer_to = cmd.destination
        self._transferring = True

    def _note_queue_moved(self, event: QueueMoved) -> None:
        self._enter_queue(event.queue, self.clock())  # a supervisor moved the caller

    def _note_supervisor_hangup(self, event: SupervisorHangup) -> None:
        self._ended_by_supervisor = True

    def _note_hangup(self, cmd: Hangup) -> None:
        if cmd.after_play and not self._caller_cause:
            self._hangup_after_play = cmd.cause  # ends when the call does (its HungUp)
            return
        self._end("hangup" if self._caller_cause else "flow_hangup",
                  self._caller_cause or cmd.cause)

    def _enter_queue(self, queue: str, now: float) -> None:
        if not self.queues or self.queues[-1] != queue:
            self.queues.append(queue)
        if self._queue_since is None:
            self._queue_since = now

    def _leave_queue(self, result: QueueResult, now: float) -> None:
        self.queue_outcome = result.outcome
        if result.outcome == "answered" and result.detail:
            self.agent = result.detail
        if self._queue_since is not None:
            until = self._assigned_at if result.outcome == "answered" and self._assigned_at \
                else now
            self._queue_wait += max(0.0, until - self._queue_since)
            self._queue_since = None
        if result.outcome != "answered":
            self.agent = None
        self._assigned_at = None

    # ------------------------------------------------------------------ the record

    def _disposition(self, ending: str) -> str:
        if ending in ("failed", "transferred"):
            return ending
        if self._transferring:  # the caller hung up before the engine took the transfer
            return "transferred"
        in_queue = self._queue_since is not None
        if in_queue and (self._assigned_at is not None or self._dial_answered):
            return "answered"
        if in_queue and self._ended_by_supervisor:
            return "hangup"
        if in_queue:  # the queue hung up (max wait, overflow) or the caller gave up
            return "overflow" if ending == "flow_hangup" else "abandoned"
        if self.queue_outcome:
            if self.queue_outcome == "answered" or self._dial_answered:
                return "answered"
            return _QUEUE_DISPOSITION[self.queue_outcome]
        return "answered" if self._dial_answered else "hangup"

    def _end(self, ending: str, cause: str, error: str = "") -> None:
        if self.record is not None:
            return
        now = self.clock()
        disposition = self._disposition(ending)
        wait: float | None = None
        if self.queues:
            wait = self._queue_wait
            if self._queue_since is not None:
                wait += max(0.0, (self._assigned_at or now) - self._queue_since)
        extra: dict[str, object] = {}
        if len(self.queues) > 1:
            extra["queues"] = list(self.queues)
        if self._transfer_to:
            extra["transfer_to"] = self._transfer_to
        if error:
            extra["error"] = error
        if self._taken_from:
            extra["taken_over_from"] = self._taken_from
        if self._ended_by_supervisor:
            extra["ended_by"] = "supervisor"
        if self._callback_to:  # asked to be called back at this number
            extra["callback_to"] = self._callback_to
        callback = self.call.variables.get(CALLBACK_VARIABLE, "").partition(":")[2]
        if callback:  # the call Callyard placed back to the caller of call ``callback``
            extra["callback_of"] = callback
        for name, since in self._recording_since.items():  # still running at the end
            self._recording(name)["seconds"] = round(now - since, 3)
        if self._recordings:
            extra["recordings"] = self._recordings
        message = self._message
        if message is not None and self._message_since is not None:  # hung up mid-message
            message["seconds"] = round(now - self._message_since, 3)
        if message is not None and message["seconds"] >= MIN_MESSAGE_SECONDS:
            extra["voicemail"] = message
            if disposition != "failed":
                disposition = "voicemail"
        answered = self.answered_at if self.answered_at is not None else self._answer_sent
        self.record = CdrRecord(
            call_id=self.call.call_id, engine=self.call.engine, node=self.call.node,
            caller=self.call.caller, called=self.call.called,
            started_at=self.started_at or now, answered_at=answered, ended_at=now,
            menu_path=tuple(self.menus), queue=self.queues[0] if self.queues else None,
            wait_seconds=None if wait is None else round(wait, 3),
            agent=self.agent if disposition in ("answered", "transferred") else None,
            disposition=disposition, hangup_cause=cause, extra=extra,
        )
        self.sink(self.record)
        if self.observer:
            self.observer.call_ended(self.call, disposition)


# What CdrFlow notes of each event and command type (others pass without a look).
_EVENT_NOTES: dict[type, Callable[[CdrFlow, Any], None]] = {
    Answered: CdrFlow._note_answered,
    HungUp: CdrFlow._note_hung_up,
    QueueUpdate: CdrFlow._note_queue_update,
    AgentAssigned: CdrFlow._note_agent_assigned,
    DialResult: CdrFlow._note_dial_result,
    QueueResult: CdrFlow._note_queue_result,
    TransferResult: CdrFlow._note_transfer_result,
    QueueMoved: CdrFlow._note_queue_moved,
    SupervisorHangup: CdrFlow._note_supervisor_hangup,
    RecordFinished: CdrFlow._note_record_finished,
    RecordingStarted: CdrFlow._note_recording_started,
    RecordingStopped: CdrFlow._note_recording_stopped,
}
_COMMAND_NOTES: dict[type, Callable[[CdrFlow, Any], None]] = {
    Answer: CdrFlow._note_answer,
    SetVariable: CdrFlow._note_set_variable,
    Enqueue: CdrFlow._note_enqueue,
    Dial: CdrFlow._note_dial,
    Transfer: CdrFlow._note_transfer,
    Record: CdrFlow._note_record,
    Hangup: CdrFlow._note_hangup,
}


class CdrCalls:
    """A worker's CDRs: every call's :class:`CdrFlow`, while the call lasts.

    :meth:`wrap` is the CDR layer of :mod:`appserver.worker.pipeline`; the queueing layer
    reports to :meth:`queue_entered` and :meth:`queue_left` (a
    :class:`~appserver.queues.flow.QueueObserver`)."""

    def __init__(self, sink: CdrSink, *, observer: CdrObserver | None = None) -> None:
        self.sink = sink
        self.observer = observer
        self.active: dict[str, CdrFlow] = {}

    def wrap(self, flow: CallFlow, call: CallInfo) -> CdrFlow:
        cdr = CdrFlow(flow, call, self._emit, observer=self.observer)
        self.active[call.call_id] = cdr
        return cdr

    def queue_entered(self, call_id: str, queue: str) -> None:
        cdr = self.active.get(call_id)
        if cdr is not None:
            cdr.queue_entered(queue)

    def queue_left(self, call_id: str, result: QueueResult) -> None:
        cdr = self.active.get(call_id)
        if cdr is not None:
            cdr.queue_left(result)

    def queue_taken_over(self, call_id: str, taken: TakenOver) -> None:
        cdr = self.active.get(call_id)
        if cdr is not None:
            cdr.queue_taken_over(taken)

    def _emit(self, record: CdrRecord) -> None:
        self.active.pop(record.call_id, None)
        log.info("call ended", extra={
            "call_id": record.call_id, "engine": record.engine, "node": record.node,
            "disposition": record.disposition, "cause": record.hangup_cause,
            "seconds": round(record.ended_at - record.started_at, 3),
            "menu_path": "/".join(record.menu_path), "queue": record.queue or "",
            "agent": record.agent or ""})
        self.sink(record)

    def lost(self, call: CallInfo, started_at: float, cause: str = "WORKER_LOST") -> None:
        """A call another process served, which ended while no worker watched it (that process
        died): recorded as failed, from what is known of it."""
        now = time.time()
        self._emit(CdrRecord(
            call_id=call.call_id, engine=call.engine, node=call.node, caller=call.caller,
            called=call.called, started_at=started_at or now, ended_at=now,
            disposition="failed", hangup_cause=cause))

    def abandon_all(self, cause: str = "WORKER_SHUTDOWN") -> int:
        """Record every call still open as failed (the process is about to exit)."""
        flows = list(self.active.values())
        for cdr in flows:
            cdr.abandon(cause)
        return len(flows)

    def forget_all(self) -> int:
        """Forget open calls without a record: another process takes them over."""
        count = len(self.active)
        self.active.clear()
        return count
