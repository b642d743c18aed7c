"""Queue, agent and membership definitions as published to Redis, with validation.

PostgreSQL (tables ``queues``, ``agents``, ``queue_members``) is the source of truth;
:mod:`appserver.queues.config` reads rows into these types and publishes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from ivr.model import PromptSpecError, is_template, parse_prompt

Strategy = Literal["ring_all", "longest_idle", "round_robin", "fewest_calls", "random", "skills"]
QueueAction = Literal["queue", "menu", "extension", "hangup", "voicemail"]
RecordingMode = Literal["never", "always", "on_demand"]
RECORDING_MODES: tuple[str, ...] = ("never", "always", "on_demand")
AgentKind = Literal["browser", "sip"]
AgentState = Literal["logged_out", "available", "offered", "on_call", "wrap_up", "break", "away"]

STRATEGIES: tuple[str, ...] = get_args(Strategy)
ACTIONS: tuple[str, ...] = get_args(QueueAction)
AGENT_STATES: tuple[str, ...] = get_args(AgentState)
# Every key of the queue state starts with this prefix, whose hash tag puts them all in one
# Redis Cluster slot: one script touches a queue, its agents, their other queues and the
# global lease and offer sets, so they must share a slot (see QueueStore).
KEY_PREFIX = "{callyard:q}:"
HASH_TAG_RE = re.compile(r"^\{[^{}]+\}")
# Names become parts of Redis keys; ':' and '|' are separators there.
NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")
CALL_ID_RE = re.compile(r"^[^\s|]{1,200}$")
MAX_PRIORITY = 99
# A callback dial string: one token with {number} in it (where the customer's digits go).
CALLBACK_ENDPOINT_RE = re.compile(r"^[^\s,|{}'\"]*\{number\}[^\s,|{}'\"]*$")


class QueueConfigError(ValueError):
    """A queue, agent or membership definition that cannot be used (says what and why)."""


def check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise QueueConfigError(
            f"{kind} name {value!r} is invalid: use 1-128 letters, digits or _ . @ + -"
        )
    return value


def check_call_id(value: str) -> str:
    if not isinstance(value, str) or not CALL_ID_RE.match(value):
        raise QueueConfigError(f"call id {value!r} is invalid: no spaces or '|', 1-200 chars")
    return value


def _skills(kind: str, value: object) -> dict[str, int]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise QueueConfigError(f"{kind}: not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise QueueConfigError(f"{kind}: expected an object {{skill: level}}, got {value!r}")
    out: dict[str, int] = {}
    for skill, level in value.items():
        if not isinstance(skill, str) or not skill or not isinstance(level, int) or isinstance(
            level, bool
        ) or not 0 <= level <= 100:
            raise QueueConfigError(f"{kind}: skill {skill!r} needs an integer level 0..100")
        out[skill] = level
    return out


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    strategy: Strategy = "longest_idle"
    max_wait_seconds: int = 0  # 0: wait forever
    max_length: int = 0  # 0: unlimited
    announce_interval: int = 0  # seconds between announcements; 0: none
    announce_position: bool = True
    announce_wait: bool = True
    moh_class: str = "default"
    wrapup_seconds: int = 0
    ring_timeout: int = 20
    max_no_answer: int = 3  # 0: never send agents away
    overflow_action: QueueAction = "hangup"
    overflow_target: str = ""
    join_when_empty: bool = True
    leave_when_empty: bool = False
    exit_key: str = ""  # one DTMF digit, "" for none
    exit_action: QueueAction = "hangup"
    exit_target: str = ""
    service_level_seconds: int = 20
    tier_widen_seconds: int = 0  # 0: all tiers at once (lower tiers still preferred)
    required_skills: dict[str, int] = field(default_factory=dict)
    # Callback in queue (see README "Callback in queue"): the key a waiting caller presses to
    # hang up and be called back at their place in line; "" for none.
    callback_key: str = ""
    callback_announce: bool = True  # offer the key in the periodic announcement
    callback_max_attempts: int = 3  # calls to the customer before the callback fails
    callback_retry_seconds: int = 300  # between a busy / unanswered attempt and the next
    callback_ring_seconds: int = 30  # how long the customer's phone rings
    # Dial strings for the customer's number, per engine; {number} is replaced.
    callback_freeswitch_endpoint: str = "sofia/gateway/pstn/{number}"
    callback_asterisk_endpoint: str = "PJSIP/{number}@pstn"
    # Call recording: never | always (from the agent's answer) | on_demand (the agent starts
    # it in the console); the announcement (a prompt spec) plays as the caller joins.
    recording: RecordingMode = "never"
    recording_announcement: str = ""

    def __post_init__(self) -> None:
        check_name("queue", self.name)
        if self.strategy not in STRATEGIES:
            raise QueueConfigError(
                f"queue {self.name}: strategy {self.strategy!r} is not one of {STRATEGIES}"
            )
        for fname in ("max_wait_seconds", "max_length", "announce_interval", "wrapup_seconds",
                      "max_no_answer", "service_level_seconds", "tier_widen_seconds"):
            v = getattr(self, fname)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise QueueConfigError(f"queue {self.name}: {fname} must be an integer >= 0")
        if not isinstance(self.ring_timeout, int) or not 1 <= self.ring_timeout <= 600:
            raise QueueConfigError(f"queue {self.name}: ring_timeout must be 1..600 seconds")
        for prefix in ("overflow", "exit"):
            action = getattr(self, f"{prefix}_action")
            target = getattr(self, f"{prefix}_target")
            if action not in ACTIONS:
                raise QueueConfigError(
                    f"queue {self.name}: {prefix}_action {action!r} is not one of {ACTIONS}"
                )
            if action != "hangup" and not target:
                raise QueueConfigError(f"queue {self.name}: {prefix}_action {action} "
                                       f"needs {prefix}_target")
            if action == "queue" and target == self.name:
                raise QueueConfigError(f"queue {self.name}: {prefix}_target cannot be itself")
        if self.exit_key and (len(self.exit_key) != 1 or self.exit_key not in "0123456789*#"):
            raise QueueConfigError(f"queue {self.name}: exit_key must be one of 0-9 * #")
        if not self.moh_class:
            raise QueueConfigError(f"queue {self.name}: moh_class must not be empty")
        self._check_callback()
        if self.recording_announcement:
            try:
                prompt = parse_prompt(self.recording_announcement)
            except PromptSpecError as exc:
                raise QueueConfigError(f"queue {self.name}: recording_announcement: {exc}"
                                       ) from None
            if is_template(prompt.value):
                raise QueueConfigError(f"queue {self.name}: recording_announcement must be a "
                                       "plain prompt, not a template")
        if self.recording not in RECORDING_MODES:
            raise QueueConfigError(f"queue {self.name}: recording {self.recording!r} is not "
                                   f"one of {RECORDING_MODES}")
        object.__setattr__(
            self, "required_skills", _skills(f"queue {self.name} required_skills",
                                             self.required_skills)
        )

    def _check_callback(self) -> None:
        key = self.callback_key
        if key and (len(key) != 1 or key not in "0123456789*#"):
            raise QueueConfigError(f"queue {self.name}: callback_key must be one of 0-9 * #")
        if key and key == self.exit_key:
            raise QueueConfigError(f"queue {self.name}: callback_key and exit_key must differ")
        for fname, low, high in (("callback_max_attempts", 1, 10),
                                 ("callback_retry_seconds", 1, 86400),
                                 ("callback_ring_seconds", 1, 300)):
            v = getattr(self, fname)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise QueueConfigError(f"queue {self.name}: {fname} must be {low}..{high}")
        for fname in ("callback_freeswitch_endpoint", "callback_asterisk_endpoint"):
            if not CALLBACK_ENDPOINT_RE.match(getattr(self, fname)):
                raise QueueConfigError(f"queue {self.name}: {fname} must contain {{number}} "
                                       "and no blanks, quotes or , | {{}} besides it")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QueueConfig:
        """From a ``queues`` row (or any mapping); NULLs take the defaults."""
        names = cls.__dataclass_fields__
        kwargs = {k: row[k] for k in names if k in row and row[k] is not None}
        if "name" not in kwargs:
            raise QueueConfigError("queue row without a name")
        return cls(**kwargs)

    def to_redis(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in asdict(self).items():
            if isinstance(v, bool):
                out[k] = "1" if v else "0"
            elif isinstance(v, dict):
                out[k] = json.dumps(v) if v else "{}"
            else:
                out[k] = str(v)
        return out

    @classmethod
    def from_redis(cls, h: Mapping[str, str]) -> QueueConfig:
        kwargs: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name not in h:
                continue
            raw = h[name]
            if f.type == "bool":
                kwargs[name] = raw == "1"
            elif f.type == "int":
                kwargs[name] = int(raw)
            elif name == "required_skills":
                kwargs[name] = json.loads(raw)
            else:
                kwargs[name] = raw
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    username: str
    display_name: str = ""
    kind: AgentKind = "browser"
    extension: str = ""  # what a SIP agent's phone is dialled as
    skills: dict[str, int] = field(default_factory=dict)
    enabled: bool = True

    def __post_init__(self) -> None:
        check_name("agent", self.username)
        if self.kind not in ("browser", "sip"):
            raise QueueConfigError(f"agent {self.username}: kind must be browser or sip")
        if self.kind == "sip" and not self.extension:
            raise QueueConfigError(f"agent {self.username}: a sip agent needs an extension")
        object.__setattr__(self, "skills", _skills(f"agent {self.username} skills", self.skills))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AgentConfig:
        names = cls.__dataclass_fields__
        kwargs = {k: row[k] for k in names if k in row and row[k] is not None}
        if "username" not in kwargs:
            raise QueueConfigError("agent row without a username")
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Member:
    agent: str
    tier: int = 1  # 1..9; tier n is tried after (n-1) * tier_widen_seconds of waiting
    penalty: int = 0  # 0..100; lower first within a tier

    def __post_init__(self) -> None:
        check_name("agent", self.agent)
        if not isinstance(self.tier, int) or not 1 <= self.tier <= 9:
            raise QueueConfigError(f"member {self.agent}: tier must be 1..9")
        if not isinstance(self.penalty, int) or not 0 <= self.penalty <= 100:
            raise QueueConfigError(f"member {self.agent}: penalty must be 0..100")


# ---------------------------------------------------------------- runtime results


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    status: Literal["ok", "full", "empty"]
    position: int = 0
    staffed: int = 0  # agents logged in and not on break/away


@dataclass(frozen=True, slots=True)
class Offer:
    call_id: str
    agent: str
    mode: Literal["offer", "assigned"]  # offer: waits for accept; assigned: dial now (SIP)


@dataclass(frozen=True, slots=True)
class AcceptResult:
    ok: bool
    queue: str = ""
    target: str = ""
    kind: str = ""
    error: str = ""  # not_offered | taken | caller_left


@dataclass(frozen=True, slots=True)
class CallStatus:
    call_id: str
    queue: str
    state: str  # waiting | offered | assigned
    position: int  # 1-based; 0 once assigned
    staffed: int  # agents logged in and not on break/away
    avg_handle_seconds: float

    @property
    def estimated_wait(self) -> float:
        """Seconds: callers ahead served in parallel by the staffed agents."""
        if self.position <= 0 or self.avg_handle_seconds <= 0:
            return 0.0
        return self.position * self.avg_handle_seconds / max(1, self.staffed)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    username: str
    state: AgentState
    reason: str
    since_ms: int
    offer: str  # call id being offered, "" if none
    call: str  # call id on the line, "" if none
    calls_handled: int
    no_answer: int
    queues: tuple[str, ...]
    kind: str = "browser"
    wrapup_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    waiting: int
    longest_wait: float  # seconds
    joined: int
    answered: int
    abandoned: int
    overflowed: int
    exited: int
    lost: int
    service_level: float  # % of answered + abandoned answered within service_level_seconds
    avg_wait: float  # seconds, answered calls
    avg_handle: float  # seconds
    agents: dict[str, int]  # state -> count among members
    agent_calls: dict[str, int]  # agent -> calls handled in this queue
    callbacks_waiting: int = 0  # callbacks at their place in line (no caller on the line)
    callbacks_dialing: int = 0  # accepted by an agent, the customer being called
    callback_estimate: float = 0.0  # seconds until the next waiting callback is made
    callbacks_requested: int = 0
    callbacks_answered: int = 0
    callbacks_failed: int = 0  # every attempt busy or unanswered

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class QueuedCall:
    """A caller's entry in Redis while it is queued: waiting, offered or with an agent."""

    call_id: str
    queue: str
    state: str  # waiting | offered | assigned
    caller: str
    agent: str  # "" until an agent took the call
    held: bool  # the agent put the caller on hold
    transfer: str  # the agent's blind transfer under way, "" if none
    joined_ms: int
    menu_path: tuple[str, ...]  # the IVR menus the caller went through
    priority: int = 0  # higher first
    callback: str = ""  # a callback (no caller on the line): the number to call back

    @classmethod
    def from_redis(cls, call_id: str, h: Mapping[str, str]) -> QueuedCall:
        return cls(call_id=call_id, queue=h.get("queue", ""), state=h.get("state", ""),
                   callback=h.get("callback", ""),
                   caller=h.get("caller", ""), agent=h.get("agent", ""),
                   held=h.get("held") == "1", transfer=h.get("transfer", ""),
                   joined_ms=int(float(h.get("joined") or 0)),
                   menu_path=tuple(p for p in (h.get("menu_path") or "").split("/") if p),
                   priority=int(h.get("priority") or 0))


@dataclass(frozen=True, slots=True)
class CallerMoved:
    """A supervisor moved a waiting caller (``lua/move.lua``): from ``old_queue`` at
    ``old_priority`` to ``queue`` at ``priority`` (either may be unchanged)."""

    call_id: str
    old_queue: str
    queue: str
    old_priority: int
    priority: int


@dataclass(frozen=True, slots=True)
class CallbackDial:
    """A callback an agent accepted, claimed by this worker to dial the customer."""

    entry: str  # the queue entry (the call id of the caller who asked)
    queue: str
    number: str
    agent: str
    attempt: int  # 1 for the first call to the customer
    node: str = ""  # the engine node the caller came in on: dialled from there if reached


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What became of a callback after an attempt: ``answered`` (the customer's leg goes to
    a worker), ``retry`` (waits until ``not_before_ms``), ``failed`` (no attempt left) or
    ``gone`` (nothing to do: it ended meanwhile)."""

    status: Literal["answered", "retry", "failed", "gone"]
    attempts: int = 0
    not_before_ms: int = 0


@dataclass(frozen=True, slots=True)
class AnsweredCallback:
    """A callback's customer answered and this worker holds the entry, now under the
    channel's call id: ``state`` assigned (``agent`` accepted, dial ``target``) or waiting."""

    queue: str
    state: str
    agent: str
    target: str
    kind: str
    priority: int
    joined_ms: int


@dataclass(frozen=True, slots=True)
class TakenOver:
    """A live caller's queue entry this worker took over from ``previous_owner`` (a dead
    worker): the caller resumes waiting in ``queue`` at their place (see
    ``lua/takeover.lua``)."""

    call_id: str
    queue: str
    state: str  # waiting | offered
    priority: int
    joined_ms: int
    menu_path: str  # "main/sales": the IVR path that led to the queue
    previous_owner: str
