"""What a queued caller hears and does: a pure call flow (no I/O).

:class:`CallerFlow` runs while one caller is in one queue. It plays music on hold,
announces position and estimated wait every ``announce_interval`` seconds, lets the caller
leave with the exit key, applies ``max_wait_seconds`` and leave-when-empty, and connects the
caller with ``Dial`` once the queue runtime delivers :class:`~ivr.calls.AgentAssigned`.
Its decisions that change shared queue state are handed to ``sink`` as :data:`RuntimeAction`
values, which the queue runtime carries out in Redis.

While connected, the agent can put the caller on hold, resume, or blind-transfer them
(:class:`~ivr.calls.AgentRequest`, delivered by the runtime): a transfer ends the agent's
leg (``EndDial``) and, once its ``DialResult`` is in, continues with ``Transfer`` to an
extension or ``Enqueue`` into a queue. An agent's hang-up ends their leg the same way, then
the call is answered and over for the queue.

A supervisor can move a waiting caller to another queue or change their priority
(:class:`~ivr.calls.QueueMoved`: the new queue's music, announcements and maximum wait) and
hang a caller up (:class:`~ivr.calls.SupervisorHangup`: a waiting caller leaves as ``ended``;
a connected one loses the agent's leg, then the call).

Call recording (the queue's ``recording``): ``always`` sends ``StartRecording`` with the
``Dial`` to the agent (the engine writes from the moment they are bridged), ``on_demand``
when the agent asks (``AgentRequest("record", "start")``); the agent may pause and resume it
(card numbers) and, on demand, stop it. The file is ``recording-<queue>-<call id>``. With a
``recording_announcement``, it plays as the caller joins, before the music.

It ends either with a terminal command (``Enqueue`` for overflow to another queue or an
agent's transfer, ``Transfer`` to an extension, ``Hangup``) or, for outcomes the enclosing
flow decides (answered, abandoned, overflow or exit to a menu, failure), with
:attr:`CallerFlow.result` set and no terminal command; ``result.detail`` is then
``"menu:<name>"`` for a menu route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from appserver.queues.model import QueueConfig
from ivr.calls import (
    AgentAssigned,
    AgentRequest,
    CallInfo,
    CancelTimer,
    Command,
    Dial,
    DialResult,
    Dtmf,
    EndDial,
    Enqueue,
    Event,
    Hangup,
    Hold,
    HungUp,
    PauseRecording,
    Play,
    PlayFinished,
    Prompt,
    QueueMoved,
    QueueResult,
    QueueUpdate,
    ResumeRecording,
    SetVariable,
    StartMoh,
    StartRecording,
    StartTimer,
    StopMoh,
    StopPlay,
    StopRecording,
    SupervisorHangup,
    TimerFired,
    Transfer,
    Unhold,
)
from ivr.model import parse_prompt

ANNOUNCE_TIMER = "queue:announce"
MAX_WAIT_TIMER = "queue:max_wait"
MENU_PATH_VARIABLE = "ivr_menu_path"  # set by the IVR (ivr.machine) as the caller moves
# Set on the channel when the caller joins a queue: a worker handed the call later (the one
# serving it died) looks for a queue entry to take over only when the engine reports it.
QUEUED_VARIABLE = "callyard_queued"
ANNOUNCE_PLAY = "queue:announce"
# Set on the channel a worker originates to a callback's customer: "<queue>:<entry>".
CALLBACK_VARIABLE = "callyard_callback"
# Set on the caller's channel when they asked to be called back: the number (and the CDR).
CALLBACK_TO_VARIABLE = "callyard_callback_to"
# Callback in queue: the caller's dialog (confirm the number or key one in) and its plays.
CALLBACK_TIMER = "queue:callback"
CALLBACK_PLAY = "queue:callback"
CALLBACK_DIALOG_SECONDS = 10.0  # for each answer of the dialog; silence: back to waiting
CALLBACK_CONFIRM_KEY, CALLBACK_OTHER_NUMBER_KEY = "1", "2"
CALLBACK_PROMPTS = {  # what each step says (the demo's set; see appserver/devkit/demo.py)
    "offer": "queue/callback_offer",  # + the key's digit
    "confirm": "queue/callback_confirm",  # + the number's digits
    "confirm_keys": "queue/callback_confirm_keys",
    "enter": "queue/callback_enter",
    "registered": "queue/callback_registered",
    "hello": "queue/callback_hello",
}


def recording_name(queue: str, call_id: str, take: int = 1) -> str:
    """A call's recording in a queue: ``recording-<queue>-<call id>`` (+ ``.wav``), flat in
    the engine's recordings directory; a later take (stopped, then started again) gets
    ``-<take>`` so it never overwrites the first."""
    return f"recording-{queue}-{call_id}" + (f"-{take}" if take > 1 else "")


# ---------------------------------------------------------------- actions for the runtime


@dataclass(frozen=True, slots=True)
class Join:
    call_id: str
    queue: str
    priority: int
    caller: str
    menu_path: str = ""  # "main/sales": the IVR path taken, shown to the agent


@dataclass(frozen=True, slots=True)
class Leave:
    call_id: str
    outcome: Literal["abandoned", "left", "overflow", "timeout", "ended"]  # ended: supervisor


@dataclass(frozen=True, slots=True)
class DialFailed:
    call_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class Finish:
    call_id: str


@dataclass(frozen=True, slots=True)
class RequestCallback:
    """The caller confirmed ``number``: their entry waits on as a callback, they hang up.
    ``engine`` and ``node``: where they came in, where the callback is dialled from."""

    call_id: str
    number: str
    engine: str
    node: str


@dataclass(frozen=True, slots=True)
class CallbackAnswered:
    """The customer of the callback ``entry`` answered on channel ``call_id``."""

    call_id: str
    entry: str


RuntimeAction: TypeAlias = Join | Leave | DialFailed | Finish | RequestCallback | CallbackAnswered
Phase = Literal["idle", "waiting", "connecting", "done"]
CallbackStep = Literal["", "confirm", "enter", "registered"]


def callback_number(value: str) -> str:
    """``value`` if it can be called back (3-20 digits, optionally after +), else ""."""
    digits = value.removeprefix("+")
    return value if digits.isdigit() and 3 <= len(digits) <= 20 and value.isascii() else ""


def parse_transfer_target(target: str) -> tuple[str, str] | None:
    """``"extension:1002"`` -> ("extension", "1002"); ``"queue:sales"`` -> ("queue", "sales");
    None for anything else."""
    kind, _, value = target.partition(":")
    if kind not in ("extension", "queue") or not value:
        return None
    return kind, value


def announcement(position: int, wait_seconds: float, config: QueueConfig) -> tuple[Prompt, ...]:
    """Prompts for "you are caller N, estimated wait M minutes" per the queue's settings."""
    prompts: list[Prompt] = []
    if config.announce_position and position > 0:
        prompts += [Prompt("file", "queue/position"), Prompt("number", str(position))]
    if config.announce_wait and wait_seconds > 0:
        minutes = max(1, round(wait_seconds / 60))
        prompts += [Prompt("file", "queue/estimated_wait"), Prompt("number", str(minutes)),
                    Prompt("file", "queue/minute" if minutes == 1 else "queue/minutes")]
    if config.callback_key and config.callback_announce:
        prompts += [Prompt("file", CALLBACK_PROMPTS["offer"]),
                    Prompt("digits", config.callback_key)]
    return tuple(prompts)


class CallerFlow:
    """One caller's stay in one queue. ``sink`` receives the runtime actions in order."""

    def __init__(
        self,
        config: QueueConfig,
        priority: int,
        sink: Callable[[RuntimeAction], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        language: str = "en",
        configs: Callable[[str], QueueConfig | None] = lambda queue: None,
    ) -> None:
        self.config = config
        self.configs = configs  # queue definitions by name, for a supervisor's move
        self.priority = priority
        self.sink = sink
        self.clock = clock
        self.language = language
        self.phase: Phase = "idle"
        self.call_id = ""
        self.result: QueueResult | None = None
        self.position = 0
        self.estimated_wait = 0.0
        self.agent = ""
        self._joined_at = 0.0
        self._playing = False
        self._announcements = 0
        self.held = False
        self.transfer_to = ""  # "extension:<n>" | "queue:<name>" once the agent asked
        self.agent_hung_up = False  # the agent ended the call (console): their leg goes
        self.caller_number = ""
        self.engine = ""  # the engine kind and node the caller came in on
        self.node = ""
        self.callback_step: CallbackStep = ""
        self.callback_to = ""  # the number being confirmed, then registered
        self._keyed = ""  # digits keyed in so far
        self._dialog_plays = 0
        self._dialog_playing = False
        self.recording = ""  # "" | "on" | "paused": the call's recording
        self._recording_takes = 0

    @property
    def done(self) -> bool:
        return self.phase == "done"

    # ------------------------------------------------------------ protocol

    def start(self, call: CallInfo) -> list[Command]:
        self.call_id = call.call_id
        self.caller_number = call.caller
        self.engine, self.node = call.engine, call.node
        self._joined_at = self.clock()
        self.phase = "waiting"
        self.sink(Join(call.call_id, self.config.name, self.priority, call.caller,
                       call.variables.get(MENU_PATH_VARIABLE, "")))
        timers = self._timers(self.config.max_wait_seconds)
        announcement = self.config.recording_announcement
        if announcement and self.config.recording != "never":  # the music follows it
            self._announcements += 1
            self._playing = True
            play = Play(self._play_id(), (parse_prompt(announcement),), language=self.language)
            return [SetVariable(QUEUED_VARIABLE, self.config.name), play, *timers]
        return [SetVariable(QUEUED_VARIABLE, self.config.name),
                StartMoh(self.config.moh_class), *timers]

    def resume(self, call: CallInfo, waited: float) -> list[Command]:
        """Go on with a stay another worker began ``waited`` seconds ago (this worker took
        the caller's entry over, at their place in line): music on hold again, the
        announcements, and what is left of ``max_wait_seconds``; no Join."""
        self.call_id = call.call_id
        self.caller_number = call.caller  # offered as the callback number
        self.engine, self.node = call.engine, call.node
        self._joined_at = self.clock() - max(0.0, waited)
        self.phase = "waiting"
        return self._wait_on()

    def start_callback(self, call: CallInfo, entry: str) -> list[Command]:
        """The customer of the callback ``entry`` answered (this is their channel): greet
        them, then music on hold until the agent who accepted it is connected (the runtime
        delivers ``AgentAssigned``), or they wait on at their place if that agent is gone."""
        self.call_id = call.call_id
        self._joined_at = self.clock()
        self.phase = "waiting"
        self.sink(CallbackAnswered(call.call_id, entry))
        self._announcements += 1
        self._playing = True
        hello = (Prompt("file", CALLBACK_PROMPTS["hello"]),)
        return [SetVariable(QUEUED_VARIABLE, self.config.name),
                Play(self._play_id(), hello, language=self.language)]

    def handle(self, event: Event) -> list[Command]:
        if self.phase == "done":
            return []
        if isinstance(event, HungUp):
            return self._hung_up()
        if isinstance(event, QueueResult):
            return self._from_runtime(event)
        if isinstance(event, SupervisorHangup):
            return self._supervisor_hangup()
        if self.phase == "waiting":
            return self._waiting(event)
        if self.phase == "connecting" and isinstance(event, DialResult):
            return self._dial_result(event)
        if self.phase == "connecting" and isinstance(event, AgentRequest):
            return self._agent_request(event)
        return []

    # ------------------------------------------------------------ phases

    def _waiting(self, event: Event) -> list[Command]:
        if self.callback_step and isinstance(event, Dtmf | TimerFired | PlayFinished):
            if not isinstance(event, TimerFired) or event.name == CALLBACK_TIMER:
                return self._callback_dialog(event)
            if self.callback_step == "registered":
                return []
        if isinstance(event, QueueUpdate):
            self.position, self.estimated_wait = event.position, event.estimated_wait
            if self.config.leave_when_empty and event.agents == 0:
                return self._route("overflow", "leaveempty", self.config.overflow_action,
                                   self.config.overflow_target)
            return []
        if isinstance(event, TimerFired):
            if event.name == MAX_WAIT_TIMER:
                return self._route("timeout", "timeout", self.config.overflow_action,
                                   self.config.overflow_target)
            if event.name == ANNOUNCE_TIMER:
                return self._announce()
            return []
        if isinstance(event, PlayFinished) and event.play_id.startswith(ANNOUNCE_PLAY):
            if self._playing and event.play_id == self._play_id():
                self._playing = False
                return [StartMoh(self.config.moh_class)]
            return []
        if isinstance(event, Dtmf):
            if self.config.callback_key and self.config.callback_key in event.digits:
                return self._offer_callback()
            if self.config.exit_key and self.config.exit_key in event.digits:
                return self._route("left", "exit", self.config.exit_action,
                                   self.config.exit_target)
            return []
        if isinstance(event, QueueMoved):
            return self._moved(event)
        if isinstance(event, AgentAssigned):
            self.phase = "connecting"
            self.agent = event.agent
            cmds = self._quiet()
            self.callback_step = ""
            kind: Literal["agent", "extension"] = "extension" if event.kind == "sip" else "agent"
            if self.config.recording == "always" and not self.recording:
                cmds.append(self._start_recording())
            cmds.append(Dial(event.target, kind=kind, timeout=float(self.config.ring_timeout)))
            return cmds
        return []

    def _moved(self, event: QueueMoved) -> list[Command]:
        """A supervisor moved the caller: the new queue's music, announcements and maximum
        wait (counted from now); their place in line is kept in Redis."""
        config = self.configs(event.queue)
        if config is None:
            return []
        self.config, self.priority = config, event.priority
        self._joined_at = self.clock()
        self.position = 0
        return [*self._quiet(), SetVariable(QUEUED_VARIABLE, config.name), *self._wait_on()]

    def _supervisor_hangup(self) -> list[Command]:
        """A supervisor ends the call: a waiting caller leaves the queue (``ended``), a
        connected one is over for the queue; the agent's leg ends, then the caller's."""
        if self.phase == "connecting":
            self.sink(Finish(self.call_id))
            self._end(QueueResult(self.config.name, "answered", self.agent))
            return [EndDial(), Hangup()]
        self.sink(Leave(self.call_id, "ended"))
        cmds = self._quiet()
        self._end(QueueResult(self.config.name, "left", "supervisor"))
        return [*cmds, Hangup()]

    def _agent_request(self, event: AgentRequest) -> list[Command]:
        if self.transfer_to:
            return []  # on the way out: nothing more to do on this leg
        if event.action == "hold" and not self.held:
            self.held = True
            return [Hold(self.config.moh_class)]
        if event.action == "unhold" and self.held:
            self.held = False
            return [Unhold()]
        if event.action == "transfer" and parse_transfer_target(event.target):
            self.transfer_to = event.target
            return [EndDial()]
        if event.action == "hangup" and not self.agent_hung_up:
            self.agent_hung_up = True
            return [EndDial()]
        if event.action == "record":
            return self._record_request(event.target)
        return []

    def _record_request(self, op: str) -> list[Command]:
        """The agent starts (on demand), pauses, resumes or stops (on demand) the recording."""
        on_demand = self.config.recording == "on_demand"
        if op == "start" and on_demand and not self.recording:
            return [self._start_recording()]
        if op == "pause" and self.recording == "on":
            self.recording = "paused"
            return [PauseRecording()]
        if op == "resume" and self.recording == "paused":
            self.recording = "on"
            return [ResumeRecording()]
        if op == "stop" and on_demand and self.recording:
            self.recording = ""
            return [StopRecording()]
        return []

    def _start_recording(self) -> StartRecording:
        self.recording = "on"
        self._recording_takes += 1
        return StartRecording(recording_name(self.config.name, self.call_id,
                                             self._recording_takes))

    def _transferred(self) -> list[Command]:
        """The agent's leg ended after their transfer request: the caller goes on."""
        self.sink(Finish(self.call_id))
        kind, target = parse_transfer_target(self.transfer_to) or ("", "")
        self._end(QueueResult(self.config.name, "answered", self.agent))
        if kind == "queue":
            return [Enqueue(target, self.priority)]
        return [Transfer(target)]

    def _dial_result(self, event: DialResult) -> list[Command]:
        self.held = False
        if self.recording and (event.outcome == "answered" or self.transfer_to):
            self.recording = ""
            return [StopRecording(), *self._dial_result(event)]
        if self.transfer_to:
            return self._transferred()
        if event.outcome == "answered" or self.agent_hung_up:
            self.sink(Finish(self.call_id))
            return self._end(QueueResult(self.config.name, "answered", self.agent))
        # The agent did not pick up: back to the same place in line.
        self.sink(DialFailed(self.call_id, self.agent))
        self.agent = ""
        self.phase = "waiting"
        return self._wait_on()

    # ------------------------------------------------------------ callback dialog

    def _offer_callback(self) -> list[Command]:
        """The caller pressed the callback key: confirm their number, or ask for one."""
        cmds = self._quiet(keep_max_wait=True)
        number = callback_number(self.caller_number)
        return cmds + (self._confirm(number) if number else self._ask_number())

    def _dialog(self, step: CallbackStep, *prompts: Prompt) -> list[Command]:
        cmds: list[Command] = []
        if self._dialog_playing:
            cmds.append(StopPlay(self._dialog_id()))
        self.callback_step = step
        self._dialog_plays += 1
        self._dialog_playing = True
        cmds.append(Play(self._dialog_id(), prompts, language=self.language))
        if step != "registered":
            cmds.append(StartTimer(CALLBACK_TIMER, CALLBACK_DIALOG_SECONDS))
        return cmds

    def _dialog_id(self) -> str:
        return f"{CALLBACK_PLAY}:{self._dialog_plays}"

    def _confirm(self, number: str) -> list[Command]:
        self.callback_to = number
        return self._dialog("confirm", Prompt("file", CALLBACK_PROMPTS["confirm"]),
                            Prompt("digits", number.removeprefix("+")),
                            Prompt("file", CALLBACK_PROMPTS["confirm_keys"]))

    def _ask_number(self) -> list[Command]:
        self._keyed = ""
        return self._dialog("enter", Prompt("file", CALLBACK_PROMPTS["enter"]))

    def _callback_dialog(self, event: Dtmf | TimerFired | PlayFinished) -> list[Command]:
        if isinstance(event, PlayFinished):
            if event.play_id != self._dialog_id():
                return []
            self._dialog_playing = False
            if self.callback_step == "registered":
                # Not Hangup(after_play) sent with the goodbye: while it plays, the runtime's
                # answer to RequestCallback (a refusal, an agent assigned) must still reach us.
                self._end(QueueResult(self.config.name, "left", "callback"))
                return [Hangup()]
            return []
        if isinstance(event, TimerFired):  # no answer: back to waiting, place kept
            return self._end_dialog()
        if self.callback_step == "confirm":
            if CALLBACK_CONFIRM_KEY in event.digits:
                return self._register()
            if CALLBACK_OTHER_NUMBER_KEY in event.digits:
                return self._ask_number()
            return []
        if self.callback_step == "enter":
            return self._key_in(event.digits)
        return []

    def _key_in(self, digits: str) -> list[Command]:
        for digit in digits:
            if digit == "#":
                number = callback_number(self._keyed)
                return self._confirm(number) if number else self._ask_number()
            if digit.isdigit():
                self._keyed += digit
        cmds: list[Command] = []
        if self._dialog_playing:  # barge in
            self._dialog_playing = False
            cmds.append(StopPlay(self._dialog_id()))
        return [*cmds, StartTimer(CALLBACK_TIMER, CALLBACK_DIALOG_SECONDS)]

    def _register(self) -> list[Command]:
        self.sink(RequestCallback(self.call_id, self.callback_to, self.engine, self.node))
        cmds: list[Command] = [CancelTimer(CALLBACK_TIMER), CancelTimer(MAX_WAIT_TIMER),
                               SetVariable(CALLBACK_TO_VARIABLE, self.callback_to)]
        return cmds + self._dialog("registered",
                                   Prompt("file", CALLBACK_PROMPTS["registered"]))

    def _end_dialog(self) -> list[Command]:
        cmds: list[Command] = [CancelTimer(CALLBACK_TIMER)]
        if self._dialog_playing:
            self._dialog_playing = False
            cmds.append(StopPlay(self._dialog_id()))
        self.callback_step = ""
        return [*cmds, StartMoh(self.config.moh_class), *self._timers(0)]

    def _hung_up(self) -> list[Command]:
        if self.callback_step == "registered":  # hung up before the goodbye ended: fine
            self._end(QueueResult(self.config.name, "left", "callback"))
            return []
        if self.phase == "connecting":
            self.sink(Finish(self.call_id))
            self._end(QueueResult(self.config.name, "answered", self.agent))
        else:
            self.sink(Leave(self.call_id, "abandoned"))
            self._end(QueueResult(self.config.name, "abandoned", "hangup"))
        return []

    def _from_runtime(self, event: QueueResult) -> list[Command]:
        """The runtime ended our stay: queue full or empty on join, or the lease was lost."""
        if event.outcome == "overflow":
            return self._route("overflow", event.detail or "overflow",
                               self.config.overflow_action, self.config.overflow_target,
                               joined=False)
        return self._quiet() + self._end(QueueResult(self.config.name, "failed", event.detail))

    # ------------------------------------------------------------ helpers

    def _wait_on(self) -> list[Command]:
        """Music on hold and the timers again, for what is left of ``max_wait_seconds``
        since the caller joined."""
        remaining = 0
        if self.config.max_wait_seconds:
            remaining = self.config.max_wait_seconds - int(self.clock() - self._joined_at)
            if remaining <= 0:
                return self._route("timeout", "timeout", self.config.overflow_action,
                                   self.config.overflow_target)
        return [StartMoh(self.config.moh_class), *self._timers(remaining)]

    def _timers(self, max_wait: int) -> list[Command]:
        cmds: list[Command] = []
        if max_wait > 0:
            cmds.append(StartTimer(MAX_WAIT_TIMER, float(max_wait)))
        config = self.config
        if config.announce_interval and (config.announce_position or config.announce_wait or (
                config.callback_key and config.callback_announce)):
            cmds.append(StartTimer(ANNOUNCE_TIMER, float(self.config.announce_interval)))
        return cmds

    def _play_id(self) -> str:
        return f"{ANNOUNCE_PLAY}:{self._announcements}"

    def _announce(self) -> list[Command]:
        cmds: list[Command] = [StartTimer(ANNOUNCE_TIMER, float(self.config.announce_interval))]
        prompts = announcement(self.position, self.estimated_wait, self.config)
        if not prompts or self._playing or self.callback_step:
            return cmds
        self._announcements += 1
        self._playing = True
        cmds += [StopMoh(), Play(self._play_id(), prompts, language=self.language)]
        return cmds

    def _quiet(self, keep_max_wait: bool = False) -> list[Command]:
        """Stop what the caller hears and the queue timers (but max wait if asked)."""
        cmds: list[Command] = []
        if self._playing:
            cmds.append(StopPlay(self._play_id()))
            self._playing = False
        if self._dialog_playing:
            cmds.append(StopPlay(self._dialog_id()))
            self._dialog_playing = False
        cmds += [StopMoh(), CancelTimer(ANNOUNCE_TIMER)]
        if self.callback_step:
            cmds.append(CancelTimer(CALLBACK_TIMER))
        if not keep_max_wait:
            cmds.append(CancelTimer(MAX_WAIT_TIMER))
        return cmds

    def _end(self, result: QueueResult) -> list[Command]:
        self.phase = "done"
        self.result = result
        return []

    def _route(self, outcome: Literal["overflow", "timeout", "left"], reason: str, action: str,
               target: str, *, joined: bool = True) -> list[Command]:
        """Leave the queue for ``action`` (queue | menu | extension | voicemail | hangup);
        ``menu`` and ``voicemail`` are the call flow's to carry out (the IVR does)."""
        if joined:
            self.sink(Leave(self.call_id, outcome))
        cmds = self._quiet()
        if action == "queue":
            cmds.append(Enqueue(target, self.priority))
            detail = f"queue:{target}"
        elif action == "extension":
            cmds.append(Transfer(target))
            detail = f"extension:{target}"
        elif action in ("menu", "voicemail"):
            detail = f"{action}:{target}"
        else:
            cmds.append(Hangup())
            detail = reason
        self._end(QueueResult(self.config.name, outcome, detail))
        return cmds
