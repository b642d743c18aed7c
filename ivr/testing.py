"""A driver for call flows in tests: virtual time, plays and timers, strict contract checks.

Useful to anyone writing a call flow. It behaves like a real driver (see :mod:`ivr.calls`):
plays last ``prompt_seconds`` per prompt (silence for its own length) and then finish,
``StopPlay`` finishes a play at once with ``stopped``, timers fire at their deadline, and
``Enqueue`` / ``Dial`` get a result after ``result_delay`` seconds from the outcome
callbacks. Every command is checked against the contract; a breach raises
:class:`ContractViolation`.

    h = FlowHarness(menuset.flow_for("9999"))
    h.start()
    h.advance(1)          # the greeting plays out
    h.press("1")
    h.run()               # until the flow is done (or waits on nothing)
    assert h.played == ["file:ivr/welcome", "file:ivr/sales"]
    assert isinstance(h.terminal, Enqueue)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.calls import (
    TERMINAL_COMMANDS,
    Answer,
    CallFlow,
    CallInfo,
    CancelTimer,
    Command,
    Dial,
    DialResult,
    Dtmf,
    Enqueue,
    Event,
    Hangup,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    QueueResult,
    Record,
    RecordFinished,
    SetVariable,
    StartMoh,
    StartTimer,
    StopMoh,
    StopPlay,
    TimerFired,
    Transfer,
)
from ivr.compile import MenuSet, compile_menuset
from ivr.model import (
    PROMPT_KINDS,
    VARIABLE_RE,
    ExtensionDef,
    MailboxDef,
    MenuDef,
    MenuSource,
    PromptSpecError,
    ScheduleDef,
    check_prompt_value,
    is_safe_text,
)

QueueOutcome = str | None  # a QueueResult outcome, or None: the queue never answers
DialOutcome = str | None


@dataclass(frozen=True, slots=True)
class _Result:
    """A scheduled queue/dial result; dropped if that attempt is no longer awaited."""

    attempt: Enqueue | Dial
    event: QueueResult | DialResult


class ContractViolation(AssertionError):
    """A flow emitted a command the driver contract does not allow."""


def check_prompt(p: object) -> None:
    if not isinstance(p, Prompt) or p.kind not in PROMPT_KINDS or not isinstance(p.value, str):
        raise ContractViolation(f"not a valid Prompt: {p!r}")
    if not p.value.strip():
        raise ContractViolation(f"empty prompt: {p!r}")
    try:
        check_prompt_value(p.kind, p.value, f"{p.kind}:{p.value}")
    except PromptSpecError as exc:
        raise ContractViolation(str(exc)) from None


def default_call(called: str = "9999", caller: str = "+15550100") -> CallInfo:
    return CallInfo(call_id="test-call", engine="test", caller=caller, called=called)


@dataclass
class FlowHarness:
    flow: CallFlow
    call: CallInfo = field(default_factory=default_call)
    prompt_seconds: float = 1.0
    result_delay: float = 5.0
    queue_outcome: Callable[[Enqueue], QueueOutcome] = lambda e: "failed"
    dial_outcome: Callable[[Dial], DialOutcome] = lambda d: "no_answer"
    record_seconds: float = 3.0  # a Record without terminator key ends after this (or its max)

    now: float = 0.0
    commands: list[Command] = field(default_factory=list)
    log: list[tuple[float, Any]] = field(default_factory=list)  # (time, command or event)
    played: list[str] = field(default_factory=list)  # "kind:value" of each prompt started
    variables: dict[str, str] = field(default_factory=dict)
    terminal: Command | None = None  # the last terminal command
    hung_up: bool = False
    answered: bool = False
    started: bool = False

    def __post_init__(self) -> None:
        self._queue: list[tuple[float, int, Event | _Result]] = []
        self._seq = 0
        self._plays: dict[str, int] = {}  # active play id -> token of its finish event
        self._timers: dict[str, int] = {}  # running timer name -> token
        self._used_play_ids: set[str] = set()
        self._stopped: set[str] = set()
        self._waiting: Enqueue | Dial | None = None
        self._recording: tuple[Record, float, int] | None = None  # (command, start, token)
        self.recordings: list[tuple[Record, float]] = []  # (command, seconds) as finished
        self._ended = False  # Hangup or Transfer was executed

    # ---------------------------------------------------------------- public driving API
    @property
    def done(self) -> bool:
        return self.hung_up or self._ended or self.flow.done

    @property
    def playing(self) -> bool:
        """A prompt is playing (started and not finished or stopped)."""
        return bool(self._plays)

    @property
    def waiting(self) -> Enqueue | Dial | None:
        """The queue/dial attempt awaiting its result, if any."""
        return self._waiting

    def start(self) -> list[Command]:
        if self.started:
            raise RuntimeError("start() already called")
        self.started = True
        cmds = self.flow.start(self.call)
        self._execute(cmds)
        self._drain(self.now)
        return cmds

    def send(self, event: Event) -> list[Command]:
        """Deliver ``event`` now (as an engine would) and execute the commands it returns."""
        if self._ended and not isinstance(event, HungUp):
            raise RuntimeError(f"the call was handed away; a driver would not deliver {event}")
        if isinstance(event, HungUp):
            if self.hung_up:
                raise RuntimeError("HungUp is delivered once")
            self.hung_up = True
            self._plays.clear()
            self._timers.clear()
        self.log.append((self.now, event))
        cmds = self.flow.handle(event)
        if self.hung_up:
            return cmds  # a driver ignores commands after the hangup
        self._execute(cmds)
        return cmds

    def press(self, digits: str) -> None:
        if not self.done:
            rec = self._recording  # one the digits themselves start is not ended by them
            self.send(Dtmf(digits))
            if rec is not None and any(d in rec[0].terminators for d in digits):
                # the engine ends the recording on its terminator
                event = RecordFinished(rec[0].record_id, "done", self.now - rec[1])
                self._recording = (rec[0], rec[1], self._schedule(self.now, event))
        self._drain(self.now)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if not self.hung_up:
            self.send(HungUp(cause))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, delivering plays, timers and results."""
        self._drain(self.now + seconds)

    def run(self, limit: float = 24 * 3600.0) -> Command | None:
        """Advance until the flow is done or nothing more is scheduled; the terminal command."""
        end = self.now + limit
        while not self.done and self._queue and self._queue[0][0] <= end:
            self._drain(self._queue[0][0])
        return self.terminal

    def advance_until(self, predicate: Callable[[], bool], limit: float = 60.0) -> bool:
        """Advance event by event until ``predicate()`` holds (True), the flow is done or
        ``limit`` seconds passed (False)."""
        end = self.now + limit
        while not predicate():
            if self.done or not self._queue or self._queue[0][0] > end:
                return predicate()
            self._drain(self._queue[0][0])
        return True

    # ---------------------------------------------------------------- internals
    def _schedule(self, at: float, event: Event | _Result) -> int:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, event))
        return self._seq

    def _drain(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until and not self.hung_up:
            at, token, event = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            if self._ended:
                continue
            if isinstance(event, _Result):
                if event.attempt is self._waiting:
                    self.send_result(event.event)
                continue
            if isinstance(event, PlayFinished):
                if self._plays.get(event.play_id) != token:
                    continue
                del self._plays[event.play_id]
            elif isinstance(event, TimerFired):
                if self._timers.get(event.name) != token:
                    continue
                del self._timers[event.name]
            elif isinstance(event, RecordFinished):
                if self._recording is None or self._recording[2] != token:
                    continue
                self.recordings.append((self._recording[0], event.seconds))
                self._recording = None
            self.send(event)
        if math.isfinite(until):
            self.now = max(self.now, until)

    def _duration(self, play: Play) -> float:
        total = 0.0
        for p in play.prompts:
            total += int(p.value) / 1000 if p.kind == "silence" else self.prompt_seconds
        return total

    def _execute(self, cmds: list[Command]) -> None:
        if not isinstance(cmds, list):
            raise ContractViolation(f"a flow returns a list of commands, got {cmds!r}")
        for cmd in cmds:
            self._check(cmd)
            self.commands.append(cmd)
            self.log.append((self.now, cmd))
            self._apply(cmd)

    def _check(self, cmd: object) -> None:
        if self._ended:
            raise ContractViolation(f"{cmd!r} after the call was handed away ({self.terminal})")
        if self._waiting is not None and not isinstance(cmd, SetVariable | StartMoh | StopMoh):
            raise ContractViolation(f"{cmd!r} while waiting for the result of {self._waiting}")
        if isinstance(cmd, Answer):
            if self.answered:
                raise ContractViolation("Answer sent twice")
        elif isinstance(cmd, Play):
            if not isinstance(cmd.play_id, str) or not cmd.play_id:
                raise ContractViolation(f"Play without a play_id: {cmd!r}")
            if cmd.play_id in self._used_play_ids:
                raise ContractViolation(f"play_id {cmd.play_id!r} reused")
            if not cmd.prompts:
                raise ContractViolation(f"Play with no prompts: {cmd!r}")
            for p in cmd.prompts:
                check_prompt(p)
            if not cmd.language:
                raise ContractViolation(f"Play without a language: {cmd!r}")
        elif isinstance(cmd, StopPlay):
            if cmd.play_id not in self._plays:
                raise ContractViolation(f"StopPlay of {cmd.play_id!r}, which is not playing")
            if cmd.play_id in self._stopped:
                raise ContractViolation(f"StopPlay of {cmd.play_id!r} sent twice")
        elif isinstance(cmd, StartTimer):
            if not cmd.name or not math.isfinite(cmd.seconds) or cmd.seconds <= 0:
                raise ContractViolation(f"bad timer: {cmd!r}")
        elif isinstance(cmd, CancelTimer):
            if cmd.name not in self._timers:
                raise ContractViolation(f"CancelTimer of {cmd.name!r}, which is not running")
        elif isinstance(cmd, SetVariable):
            if not VARIABLE_RE.fullmatch(cmd.name) or not isinstance(cmd.value, str):
                raise ContractViolation(f"bad variable: {cmd!r}")
            if not is_safe_text(cmd.value):
                raise ContractViolation(f"variable value unsafe for an engine: {cmd!r}")
        elif isinstance(cmd, Enqueue):
            if not cmd.queue or not isinstance(cmd.priority, int):
                raise ContractViolation(f"bad Enqueue: {cmd!r}")
        elif isinstance(cmd, Dial):
            if not cmd.target or cmd.kind not in ("extension", "agent") or cmd.timeout <= 0:
                raise ContractViolation(f"bad Dial: {cmd!r}")
            if not is_safe_text(cmd.target):
                raise ContractViolation(f"Dial target unsafe for an engine: {cmd!r}")
        elif isinstance(cmd, Transfer):
            if not cmd.destination or not is_safe_text(cmd.destination):
                raise ContractViolation(f"bad Transfer: {cmd!r}")
        elif isinstance(cmd, Hangup):
            if not cmd.cause:
                raise ContractViolation(f"bad Hangup: {cmd!r}")
            if cmd.after_play and (cmd.after_play not in self._plays
                                   or cmd.after_play in self._stopped):
                raise ContractViolation(f"Hangup after {cmd.after_play!r}, which is not playing")
        elif isinstance(cmd, Record):
            if self._recording is not None:
                raise ContractViolation(f"{cmd!r} while {self._recording[0]!r} records")
            if not cmd.record_id or cmd.max_seconds <= 0 or not is_safe_text(cmd.name):
                raise ContractViolation(f"bad Record: {cmd!r}")
        elif not isinstance(cmd, StartMoh | StopMoh):
            raise ContractViolation(f"not a command: {cmd!r}")

    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, Answer):
            self.answered = True
        elif isinstance(cmd, Play):
            self._used_play_ids.add(cmd.play_id)
            self.played.extend(f"{p.kind}:{p.value}" for p in cmd.prompts)
            end = self.now + self._duration(cmd)
            self._plays[cmd.play_id] = self._schedule(end, PlayFinished(cmd.play_id, "done"))
        elif isinstance(cmd, StopPlay):
            self._stopped.add(cmd.play_id)
            self._plays[cmd.play_id] = self._schedule(
                self.now, PlayFinished(cmd.play_id, "stopped")
            )
        elif isinstance(cmd, StartTimer):
            self._timers[cmd.name] = self._schedule(self.now + cmd.seconds, TimerFired(cmd.name))
        elif isinstance(cmd, CancelTimer):
            self._timers.pop(cmd.name, None)
        elif isinstance(cmd, SetVariable):
            self.variables[cmd.name] = cmd.value
        elif isinstance(cmd, Record):
            seconds = min(self.record_seconds, cmd.max_seconds)
            event = RecordFinished(cmd.record_id, "done", seconds)
            self._recording = (cmd, self.now, self._schedule(self.now + seconds, event))
        elif isinstance(cmd, TERMINAL_COMMANDS):
            self.terminal = cmd
            if isinstance(cmd, Hangup | Transfer):
                self._ended = True
                self._plays.clear()
                self._timers.clear()
            elif isinstance(cmd, Enqueue):
                self._waiting = cmd
                outcome = self.queue_outcome(cmd)
                if outcome is not None:
                    result = QueueResult(cmd.queue, outcome)  # type: ignore[arg-type]
                    self._schedule(self.now + self.result_delay, _Result(cmd, result))
            elif isinstance(cmd, Dial):
                self._waiting = cmd
                d_outcome = self.dial_outcome(cmd)
                if d_outcome is not None:
                    d_result = DialResult(cmd.target, d_outcome)  # type: ignore[arg-type]
                    self._schedule(self.now + self.result_delay, _Result(cmd, d_result))

    def send_result(self, event: QueueResult | DialResult) -> list[Command]:
        """Deliver a queue/dial result now (clears the wait)."""
        self._waiting = None
        return self.send(event)


def build_menuset(
    menus: Iterable[MenuDef],
    *,
    extensions: Mapping[str, tuple[str, str]] | None = None,
    queues: Iterable[str] = (),
    schedules: Iterable[ScheduleDef] = (),
    mailboxes: Iterable[MailboxDef] = (),
    version: int = 1,
) -> MenuSet:
    """Compile menus for a test; by default extension ``9999`` enters the first menu.

    ``extensions`` maps a number to ``(kind, target)``, e.g. ``{"200": ("user", "alice")}``.
    """
    menus = tuple(menus)
    exts = dict(extensions) if extensions is not None else {}
    if extensions is None and menus:
        exts["9999"] = ("menu", menus[0].name)
    source = MenuSource(
        menus=menus,
        schedules=tuple(schedules),
        extensions=tuple(ExtensionDef(n, k, t) for n, (k, t) in exts.items()),
        queues=frozenset(queues),
        mailboxes=tuple(mailboxes),
    )
    return compile_menuset(source, version)
