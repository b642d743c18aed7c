"""The vocabulary of call flows: events in, commands out.

Pure data and no I/O. A call flow (the IVR machine, or an app written against the
call-flow API) receives :data:`Event` values and returns lists of :data:`Command`
values; the FreeSWITCH and Asterisk drivers translate commands to ESL / ARI and
engine messages back to events. The same flow therefore runs on both engines and in
tests with no engine at all.

Driver contract (both drivers implement exactly this):

* ``flow.start(call)`` is called once, when the engine hands the call over.
  Commands are executed in list order. ``Play`` starts a playback and does not wait
  for it: the driver goes on with the next command at once.
* Every ``Play`` produces exactly one ``PlayFinished`` with the same ``play_id``:
  ``done`` when it played out, ``stopped`` after a ``StopPlay`` (or any barge-in the
  engine did itself), ``failed`` when the engine could not play it.
* DTMF is delivered as ``Dtmf`` events as it arrives, whether or not a prompt is
  playing. The engine never consumes digits for the flow.
* A ``Play`` with ``stop_keys`` may end in the engine at one of those keys, before the
  flow's ``StopPlay``: the flow answers such a key's ``Dtmf`` during that play with
  ``StopPlay`` (its ``PlayFinished`` is ``stopped``, as usual). Keys outside ``stop_keys``
  never end a play.
* ``StartTimer`` with a name that is already running replaces it. ``TimerFired`` is
  never delivered for a timer that was cancelled or replaced.
* ``Hangup``, ``Transfer`` and ``Enqueue`` hand the call away; after ``Hangup`` the driver
  delivers nothing more except, at most, ``HungUp``. ``Hangup`` acts at once (a prompt
  still playing is cut off), except ``Hangup(after_play=id)``, sent with or after that
  ``Play``: the caller hears the play to its end, then the call ends, with no round trip
  through the flow (FreeSWITCH queues the hangup behind the playback; Asterisk's driver
  hangs up on its ``PlaybackFinished``). That play's ``PlayFinished`` is not delivered.
  After ``Transfer`` the driver delivers one ``TransferResult``: ``ok=True`` once the
  engine has taken the call (nothing follows), or ``ok=False`` when the engine refused it
  (the call is still the flow's) - or ``HungUp`` if the caller hung up first.
* ``Dial`` bridges the caller to the target; ``DialResult`` comes when the attempt is
  over: ``answered`` once the bridged call has ended (the other party hung up), otherwise
  ``busy`` / ``no_answer`` / ``failed`` as soon as that is known.
* ``Enqueue`` is handed to the worker's queue runtime, which later delivers events such as
  ``QueueResult`` into the same flow. Workers therefore expose a way for other components
  to deliver an event to a call by id; with no queue runtime the driver answers at once
  with ``QueueResult(outcome="failed")``.
* ``Hold`` / ``Unhold`` / ``EndDial`` act on the party a running ``Dial`` connected; with
  no such party they are ignored (and logged). ``EndDial`` ends that party's leg only: the
  caller stays, and the dial's ``DialResult`` follows as usual.
* ``Supervise`` brings a supervisor's leg (dialled with the SIP template) onto the party a
  running ``Dial`` connected, in ``mode``: ``listen`` (the supervisor hears both sides, nobody
  hears them), ``whisper`` (the dialled party hears them too, the caller never does) or
  ``barge`` (all three talk). ``Supervise(join=False)`` changes the mode on the same leg,
  without dialling again (it dials when there is no leg); ``join=True`` replaces any leg
  with a new one; ``EndSupervise`` hangs that leg up. The driver ends the supervisor's leg
  itself when the dial ends or the caller hangs up; with no dial running it is ignored.
* ``Record`` starts a recording and does not wait for it; exactly one ``RecordFinished``
  follows unless the caller hangs up first (then only ``HungUp``; the engine keeps the file).
  Digits still arrive as ``Dtmf`` while it records.
* When the caller hangs up the driver delivers ``HungUp`` (once), cancels timers
  and ignores any commands returned from then on.
* Text a flow hands to the engine (prompt values, variable values, dial targets, transfer
  destinations, hangup causes) holds no control character and no ``${``
  (:func:`ivr.model.is_safe_text`); a ``file`` prompt is a relative sound name. A driver
  never writes a value that breaks this: the FreeSWITCH driver refuses that command alone
  and logs it with the call id (a Play skips that prompt, a Dial answers
  ``DialResult(failed)``, a Transfer ``TransferResult(ok=False)``, a Hangup still hangs up
  with ``NORMAL_CLEARING``); the Asterisk driver skips such a file prompt and percent-encodes
  every value it sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

EngineName = Literal["freeswitch", "asterisk", "test"]
PromptKind = Literal["file", "tts", "digits", "number", "silence"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the engine tells us about a call when it hands it over."""

    call_id: str  # the engine's channel id (FreeSWITCH Unique-ID, Asterisk channel id)
    engine: EngineName
    caller: str  # caller id number, e.g. "+15550100"
    called: str  # the dialled number, e.g. "9999"
    node: str = ""  # which engine node (host name or ESL/ARI address)
    caller_name: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One thing to say: an audio file the engine plays, text to speak, or digits/number."""

    kind: PromptKind
    value: str  # file name ("ivr/welcome"), TTS text, "1234", "42", or milliseconds of silence


# ---------------------------------------------------------------- commands (flow -> driver)


@dataclass(frozen=True, slots=True)
class Answer:
    pass


@dataclass(frozen=True, slots=True)
class Play:
    play_id: str
    prompts: tuple[Prompt, ...]
    # keys the flow stops this play on (with StopPlay, when their Dtmf comes): the driver
    # may let the engine stop it at such a key by itself, a round trip sooner
    stop_keys: str = ""
    language: str = "en"


ALL_KEYS = "0123456789*#ABCD"  # every DTMF key: stop_keys of a prompt any key interrupts


@dataclass(frozen=True, slots=True)
class StopPlay:
    play_id: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class StartMoh:
    """Music on hold from the engine's class ``moh_class`` until ``StopMoh`` (no event)."""

    moh_class: str = "default"


@dataclass(frozen=True, slots=True)
class StopMoh:
    pass


@dataclass(frozen=True, slots=True)
class SetVariable:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Hand the caller to an ACD queue. The result comes back as ``QueueResult``."""

    queue: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Dial:
    """Call an internal extension, an agent, or a SIP URI and bridge the caller to it.

    The driver turns ``target`` into an engine dial string from its settings: one template
    for extensions and agents, another for ``kind="sip"``, where ``target`` is a SIP URI
    (e.g. the LiveKit SIP address of the call's room). The result comes back as
    ``DialResult``.
    """

    target: str
    kind: Literal["extension", "agent", "sip"] = "extension"
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Hold:
    """While ``Dial`` has the caller connected: put the call on hold. The caller hears music
    on hold (``moh_class``) and the two parties no longer hear each other, until ``Unhold``."""

    moh_class: str = "default"


@dataclass(frozen=True, slots=True)
class Unhold:
    """Take the call off hold: the caller and the dialled party talk again."""


@dataclass(frozen=True, slots=True)
class EndDial:
    """Hang up the party a running ``Dial`` rings or connected; the caller stays. The dial's
    ``DialResult`` follows (``answered`` when the party had answered)."""


SuperviseMode: TypeAlias = Literal["listen", "whisper", "barge"]
SUPERVISE_MODES: tuple[SuperviseMode, ...] = ("listen", "whisper", "barge")
SuperviseRequestMode: TypeAlias = Literal["listen", "whisper", "barge", "stop"]


@dataclass(frozen=True, slots=True)
class Supervise:
    """Bring a supervisor in on the connected call, or change their ``mode``; ``target`` is
    the SIP URI of the supervisor's LiveKit room (dialled with the SIP template)."""

    target: str
    mode: SuperviseMode = "listen"
    join: bool = True  # dial the supervisor (again); False: change the mode of their leg


@dataclass(frozen=True, slots=True)
class EndSupervise:
    """Hang the supervisor's leg up (the call goes on)."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """Blind transfer: the call leaves Callyard and continues in the engine's dialplan
    at ``destination`` (an extension or external number the dialplan routes)."""

    destination: str


@dataclass(frozen=True, slots=True)
class Record:
    """Record what the caller says into ``name`` (a relative file name without extension:
    the driver places it in the engine's recordings directory, as a WAV file), after a beep
    when ``beep``. It ends when the caller presses a key of ``terminators`` (the key is not
    recorded; its ``Dtmf`` is still delivered), after ``max_seconds``, or when the caller
    hangs up (the file is kept). ``RecordFinished`` follows, except after a hangup.
    ``mailbox`` names the voicemail box the message is for ("" for other recordings)."""

    record_id: str
    name: str
    max_seconds: int
    beep: bool = True
    terminators: str = "#"
    mailbox: str = ""


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Record the conversation (both parties, mixed) into ``name`` (a relative file name
    without extension, in the engine's recordings directory, WAV) from the moment the caller
    is bridged to the party a ``Dial`` connects (at once if already bridged) until
    ``StopRecording`` or the end of the call. ``RecordingStarted`` / ``RecordingStopped``
    report what the engine did."""

    name: str


@dataclass(frozen=True, slots=True)
class PauseRecording:
    """Silence replaces the conversation in the running recording (card numbers) until
    ``ResumeRecording``."""


@dataclass(frozen=True, slots=True)
class ResumeRecording:
    pass


@dataclass(frozen=True, slots=True)
class StopRecording:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    cause: str = "NORMAL_CLEARING"
    after_play: str = ""  # a play_id: hang up when that play ends (see the contract)


Command: TypeAlias = (
    Answer
    | Play
    | StopPlay
    | StartTimer
    | CancelTimer
    | StartMoh
    | StopMoh
    | SetVariable
    | Enqueue
    | Dial
    | Hold
    | Unhold
    | EndDial
    | Supervise
    | EndSupervise
    | Transfer
    | Record
    | StartRecording
    | PauseRecording
    | ResumeRecording
    | StopRecording
    | Hangup
)
TERMINAL_COMMANDS = (Hangup, Transfer, Enqueue, Dial)

# ---------------------------------------------------------------- events (driver -> flow)


@dataclass(frozen=True, slots=True)
class Answered:
    pass


@dataclass(frozen=True, slots=True)
class Dtmf:
    digits: str  # one or several of 0-9 * # (A-D are passed through as received)


@dataclass(frozen=True, slots=True)
class PlayFinished:
    play_id: str
    status: Literal["done", "stopped", "failed"] = "done"


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class HungUp:
    cause: str = "NORMAL_CLEARING"


@dataclass(frozen=True, slots=True)
class DialResult:
    target: str
    outcome: Literal["answered", "busy", "no_answer", "failed"]
    cause: str = ""


@dataclass(frozen=True, slots=True)
class TransferResult:
    destination: str
    ok: bool
    cause: str = ""


@dataclass(frozen=True, slots=True)
class QueueResult:
    queue: str
    outcome: Literal["answered", "overflow", "abandoned", "timeout", "left", "failed"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """From the queue runtime while the caller waits: place in line (1 = next) and the
    estimated wait in seconds (0 when unknown); ``agents`` counts agents staffing the queue."""

    queue: str
    position: int
    estimated_wait: float = 0.0
    agents: int = 0


@dataclass(frozen=True, slots=True)
class AgentAssigned:
    """From the queue runtime: ``agent`` took the call; connect the caller to ``target``
    (``kind`` "browser": dial the agent by name; "sip": dial the agent's extension)."""

    queue: str
    agent: str
    target: str
    kind: Literal["browser", "sip"] = "browser"


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """From the queue runtime, while the caller is connected to an agent: the agent asked to
    ``hold`` or ``unhold`` the caller, to blind-transfer them to ``target``
    (``extension:<number>`` or ``queue:<name>``), or hung up (``hangup``: end their leg), or
    to ``record`` (``target``: ``start``, ``pause``, ``resume`` or ``stop``)."""

    action: Literal["hold", "unhold", "transfer", "hangup", "record"]
    target: str = ""


@dataclass(frozen=True, slots=True)
class SuperviseRequest:
    """From the queue runtime, while the caller is connected to an agent: ``supervisor``
    listens, whispers to the agent or barges in (``mode``), or stops (``mode="stop"``)."""

    supervisor: str
    mode: SuperviseRequestMode
    join: bool = False  # the supervisor (re)joins: dial them; False: change mode, or stop


@dataclass(frozen=True, slots=True)
class QueueMoved:
    """From the queue runtime while the caller waits: a supervisor moved them to ``queue``
    (possibly the same one) with ``priority``; they keep their waiting time."""

    queue: str
    priority: int


@dataclass(frozen=True, slots=True)
class SupervisorHangup:
    """From the queue runtime: a supervisor hung the queued (or connected) caller up."""


@dataclass(frozen=True, slots=True)
class RecordFinished:
    """A ``Record`` ended: ``done`` (terminator key or time limit; ``seconds`` recorded) or
    ``failed`` (the engine could not record)."""

    record_id: str
    status: Literal["done", "failed"] = "done"
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    """The engine began writing the ``StartRecording`` file (the parties are bridged)."""

    name: str


@dataclass(frozen=True, slots=True)
class RecordingStopped:
    """The engine closed the recording file (``StopRecording``, the bridge or the call
    ended); ``seconds`` is its length when the engine says it (else 0)."""

    name: str
    seconds: float = 0.0


Event: TypeAlias = (
    Answered
    | Dtmf
    | PlayFinished
    | TimerFired
    | HungUp
    | DialResult
    | TransferResult
    | QueueResult
    | QueueUpdate
    | AgentAssigned
    | AgentRequest
    | SuperviseRequest
    | QueueMoved
    | SupervisorHangup
    | RecordFinished
    | RecordingStarted
    | RecordingStopped
)


class CallFlow(Protocol):
    """What a driver runs for each call. The IVR machine is one; apps are others."""

    def start(self, call: CallInfo) -> list[Command]: ...

    def handle(self, event: Event) -> list[Command]: ...

    @property
    def done(self) -> bool:
        """True once the flow has nothing more to do (hung up or handed the call away)."""
        ...
