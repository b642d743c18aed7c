"""Call-flow apps in plain Python: an :class:`App` routes called numbers to generator flows.

A flow is a generator function taking a :class:`Call`. It yields steps and receives each
step's result; it runs unchanged on FreeSWITCH, on Asterisk and in tests, because the
runner (:class:`GeneratorFlow`) is an ordinary ``ivr.calls.CallFlow``: it turns steps into
commands and engine events back into results, with no I/O of its own (so gevent and
asyncio workers run it alike).

    app = App()

    @app.route("8000")
    def hello(call):
        yield answer()
        pin = yield collect("demo/enter-pin", min_digits=4, max_digits=4)
        if pin is None:
            yield hangup()
        yield say_digits(pin)
        result = yield dial("1001")

Steps and their results:

==========================  ==================================================
``answer()``                None (media steps answer first if the flow did not)
``play(*prompts)``          digits pressed during it ("" if none); only an
                            ``interruptible=True`` play can be interrupted
``collect(*prompts, ...)``  the digits, or None (no / too few digits)
``say_digits`` / ``say_number``  like ``play``
``pause(seconds)``          None, after ``seconds`` of silence
``set_var`` / ``get_var``   None / the value (or None)
``dial(target)``            :class:`~ivr.calls.DialResult` (when the bridge ended)
``enqueue(queue)``          :class:`~ivr.calls.QueueResult`
``transfer(dest)``          ends the flow (the call leaves Callyard)
``hangup(cause)``           ends the flow
==========================  ==================================================

A prompt is a :class:`~ivr.calls.Prompt`, a file name (``"ivr/welcome"``) or
``"kind:value"`` (``"tts:Hello"``, ``"digits:42"``, ``"silence:500"``). When the flow
returns, the call is hung up. When the caller hangs up, :class:`CallerHungUp` is raised at
the pending ``yield`` (so ``try/finally`` cleanup runs); the flow must then end.

Containment (per call, logged with the call id; other calls are unaffected): an exception
in the flow, a bad step, a step that outlasts ``step_timeout`` (dial and enqueue are
bounded by their own timeouts instead) or more than ``max_steps`` steps end the call
politely: ``error_prompt`` then a hangup. A flow that keeps going after a hangup is closed
and gets no further commands. A flow that blocks the CPU without yielding cannot be
pre-empted: flows must not block (do lookups before the call or keep them fast).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

from ivr import calls as c
from ivr.model import PROMPT_KINDS, VARIABLE_RE, PromptSpecError, check_prompt_value

log = logging.getLogger("callyard.app")

DIGIT_CHARS = frozenset(c.ALL_KEYS)
FAILURE_CAUSE = "NORMAL_TEMPORARY_FAILURE"
DEFAULT_ERROR_PROMPT = "callyard/cannot-complete"  # generated for both engines (appserver.sounds)


class CallerHungUp(Exception):
    """Raised inside a flow at its pending ``yield`` when the caller hangs up."""

    def __init__(self, cause: str = "NORMAL_CLEARING") -> None:
        super().__init__(cause)
        self.cause = cause


# ---------------------------------------------------------------- prompts


def to_prompt(spec: c.Prompt | str) -> c.Prompt:
    """A prompt from a Prompt, a file name or ``kind:value``; ValueError when invalid."""
    if isinstance(spec, c.Prompt):
        prompt = spec
    elif isinstance(spec, str):
        kind, sep, value = spec.partition(":")
        prompt = c.Prompt(kind, value) if sep and kind in PROMPT_KINDS else c.Prompt("file", spec)  # type: ignore[arg-type]
    else:
        raise TypeError(f"a prompt is a Prompt or a str, got {spec!r}")
    if prompt.kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {prompt.kind!r}")
    if not isinstance(prompt.value, str) or not prompt.value.strip():
        raise ValueError(f"empty prompt: {spec!r}")
    try:
        check_prompt_value(prompt.kind, prompt.value, f"{prompt.kind}:{prompt.value}")
    except PromptSpecError as exc:
        raise ValueError(str(exc)) from None
    return prompt


def _prompts(specs: Iterable[c.Prompt | str]) -> tuple[c.Prompt, ...]:
    return tuple(to_prompt(s) for s in specs)


def _positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


# ---------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class AnswerStep:
    pass


@dataclass(frozen=True, slots=True)
class PlayStep:
    prompts: tuple[c.Prompt, ...]
    interruptible: bool = False
    language: str = "en"


@dataclass(frozen=True, slots=True)
class CollectStep:
    prompts: tuple[c.Prompt, ...]
    min_digits: int = 1
    max_digits: int = 1
    timeout: float | None = 5.0  # for the first digit, once the prompts ended; None: no limit
    inter_digit_timeout: float = 3.0
    terminator: str = "#"
    language: str = "en"


@dataclass(frozen=True, slots=True)
class PauseStep:
    seconds: float


@dataclass(frozen=True, slots=True)
class SetVarStep:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class GetVarStep:
    name: str


@dataclass(frozen=True, slots=True)
class DialStep:
    target: str
    kind: Literal["extension", "agent"] = "extension"
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class EnqueueStep:
    queue: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class TransferStep:
    destination: str


@dataclass(frozen=True, slots=True)
class HangupStep:
    cause: str = "NORMAL_CLEARING"


Step: TypeAlias = (
    AnswerStep | PlayStep | CollectStep | PauseStep | SetVarStep | GetVarStep | DialStep
    | EnqueueStep | TransferStep | HangupStep
)  # fmt: skip
STEP_TYPES = (
    AnswerStep, PlayStep, CollectStep, PauseStep, SetVarStep, GetVarStep, DialStep,
    EnqueueStep, TransferStep, HangupStep,
)  # fmt: skip
Flow: TypeAlias = Generator[Step, Any, Any]


def answer() -> AnswerStep:
    return AnswerStep()


def play(*prompts: c.Prompt | str, interruptible: bool = False, language: str = "en") -> PlayStep:
    """Play prompts; with ``interruptible`` a digit stops them (the result: those digits)."""
    if not prompts:
        raise ValueError("play() needs at least one prompt")
    return PlayStep(_prompts(prompts), interruptible, language)


def say_digits(digits: str, *, interruptible: bool = False, language: str = "en") -> PlayStep:
    return play(c.Prompt("digits", str(digits)), interruptible=interruptible, language=language)


def say_number(number: int | str, *, interruptible: bool = False, language: str = "en") -> PlayStep:
    return play(c.Prompt("number", str(number)), interruptible=interruptible, language=language)


def collect(
    *prompts: c.Prompt | str,
    min_digits: int = 1,
    max_digits: int = 1,
    timeout: float | None = 5.0,
    inter_digit_timeout: float = 3.0,
    terminator: str = "#",
    language: str = "en",
) -> CollectStep:
    """Play prompts (a digit interrupts them) and collect digits.

    Ends at ``max_digits``, on ``terminator`` (not included) or ``inter_digit_timeout``
    after a digit; the result is the digits, or None when fewer than ``min_digits`` came
    (including no digit within ``timeout`` of the prompts ending; with ``min_digits=0``
    the result is always a string, maybe empty).
    """
    if not 0 <= min_digits <= max_digits or max_digits < 1:
        raise ValueError(f"need 0 <= min_digits <= max_digits, 1 <= max_digits "
                         f"(got {min_digits}, {max_digits})")
    if terminator and (len(terminator) != 1 or terminator not in DIGIT_CHARS):
        raise ValueError(f"terminator must be one DTMF digit or '', got {terminator!r}")
    _positive("timeout", timeout, allow_none=True)
    _positive("inter_digit_timeout", inter_digit_timeout)
    return CollectStep(_prompts(prompts), min_digits, max_digits, timeout, inter_digit_timeout,
                       terminator, language)


def pause(seconds: float) -> PauseStep:
    _positive("seconds", seconds)
    return PauseStep(float(seconds))


def set_var(name: str, value: object) -> SetVarStep:
    if not isinstance(name, str) or not VARIABLE_RE.match(name):
        raise ValueError(f"bad variable name {name!r}")
    return SetVarStep(name, str(value))


def get_var(name: str) -> GetVarStep:
    return GetVarStep(name)


def dial(target: str, *, kind: Literal["extension", "agent"] = "extension",
         timeout: float = 30.0) -> DialStep:
    if not target or not isinstance(target, str):
        raise ValueError(f"bad dial target {target!r}")
    if kind not in ("extension", "agent"):
        raise ValueError(f"dial kind is extension or agent, got {kind!r}")
    _positive("timeout", timeout)
    return DialStep(target, kind, float(timeout))


def enqueue(queue: str, *, priority: int = 0) -> EnqueueStep:
    if not queue or not isinstance(queue, str):
        raise ValueError(f"bad queue name {queue!r}")
    return EnqueueStep(queue, int(priority))


def transfer(destination: str) -> TransferStep:
    if not destination or not isinstance(destination, str):
        raise ValueError(f"bad transfer destination {destination!r}")
    return TransferStep(destination)


def hangup(cause: str = "NORMAL_CLEARING") -> HangupStep:
    return HangupStep(cause or "NORMAL_CLEARING")


# ---------------------------------------------------------------- the call seen by a flow


@dataclass
class Call:
    """What a flow knows about its call; ``variables`` holds the engine's and its own."""

    info: c.CallInfo
    variables: dict[str, str] = field(default_factory=dict)
    queue_position: int = 0  # last place in line reported while enqueued (1 = next)

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def caller(self) -> str:
        return self.info.caller

    @property
    def called(self) -> str:
        return self.info.called

    @property
    def engine(self) -> str:
        return self.info.engine


Handler = Callable[[Call], Flow]


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """How a flow is contained. See the module docstring."""

    error_prompt: tuple[c.Prompt, ...] = (c.Prompt("file", DEFAULT_ERROR_PROMPT),)
    step_timeout: float = 60.0
    max_steps: int = 1000
    language: str = "en"

    def __post_init__(self) -> None:
        _positive("step_timeout", self.step_timeout)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


class FlowError(Exception):
    """A flow broke a rule of the runner (bad step, timeout, too many steps)."""


# ---------------------------------------------------------------- the runner

_STEP_TIMER, _INPUT_TIMER, _PAUSE_TIMER = "app.step", "app.input", "app.pause"
_Wait = Literal["", "play", "collect", "pause", "dial", "enqueue", "ending"]


class GeneratorFlow:
    """Runs one generator flow for one call; implements ``ivr.calls.CallFlow``."""

    def __init__(self, handler: Handler, options: FlowOptions | None = None,
                 name: str = "") -> None:
        self.handler = handler
        self.options = options or FlowOptions()
        self.name = name or getattr(handler, "__qualname__", "flow")
        self.call: Call | None = None
        self.error: str | None = None  # why the runner ended the call, if it did
        self._gen: Flow | None = None
        self._done = False
        self._hung_up = False
        self._answered = False
        self._wait: _Wait = ""
        self._step: Step | None = None
        self._play: str | None = None  # the play in progress
        self._timers: set[str] = set()
        self._digits = ""
        self._seq = 0
        self._steps = 0

    @property
    def done(self) -> bool:
        return self._done

    @property
    def waiting_on(self) -> str:
        """What the flow waits for: play, collect, pause, dial, enqueue, ending or ''."""
        return self._wait

    @property
    def accepts_digits(self) -> bool:
        """True while a digit would count: collecting, or an interruptible play."""
        if self._wait == "collect":
            return True
        step = self._step
        return self._wait == "play" and isinstance(step, PlayStep) and step.interruptible

    # ---------------------------------------------------------------- CallFlow
    def start(self, call: c.CallInfo) -> list[c.Command]:
        if self.call is not None:
            return []
        self.call = Call(call, dict(call.variables))
        out: list[c.Command] = []
        try:
            gen: Any = self.handler(self.call)
            if not inspect.isgenerator(gen):
                raise FlowError(f"{self.name} returned {type(gen).__name__}, not a generator "
                                f"(a flow yields steps)")
            self._gen = cast(Flow, gen)
        except Exception as exc:
            self._fail(exc, out)
            return out
        self._advance(out, send=None)
        return out

    def handle(self, event: c.Event) -> list[c.Command]:
        if self._done or self.call is None:
            return []
        out: list[c.Command] = []
        if isinstance(event, c.HungUp):
            self._on_hangup(event.cause)
            return []
        try:
            self._dispatch(event, out)
        except Exception as exc:  # a runner bug must not leave the call hanging
            self._fail(exc, out)
        return out

    # ---------------------------------------------------------------- events
    def _dispatch(self, event: c.Event, out: list[c.Command]) -> None:
        wait = self._wait
        if isinstance(event, c.Dtmf):
            if wait == "collect":
                self._on_collect_digits(event.digits, out)
            elif wait == "play" and self._play is not None:
                step = self._step
                if isinstance(step, PlayStep) and step.interruptible:
                    digits = "".join(ch for ch in event.digits.upper() if ch in DIGIT_CHARS)
                    if digits:
                        self._stop_play(out)
                        self._advance(out, send=digits)
        elif isinstance(event, c.PlayFinished):
            if event.play_id != self._play:
                return
            self._play = None
            if event.status == "failed":
                log.warning("%s: a prompt could not be played", self.name,
                            extra=self._extra())
            if wait == "play":
                self._advance(out, send="")
            elif wait == "collect":
                if not self._digits:
                    self._start_input_timer(out, first=True)
            elif wait == "ending":
                self._end(c.Hangup(FAILURE_CAUSE), out)
        elif isinstance(event, c.TimerFired):
            if event.name not in self._timers:
                return
            self._timers.discard(event.name)
            if event.name == _STEP_TIMER:
                if wait == "ending":
                    self._end(c.Hangup(FAILURE_CAUSE), out)
                else:
                    self._fail(FlowError(f"step {self._step!r} outlasted the step timeout "
                                         f"({self.options.step_timeout:g}s)"), out)
            elif event.name == _INPUT_TIMER and wait == "collect":
                self._finish_collect(out)
            elif event.name == _PAUSE_TIMER and wait == "pause":
                self._advance(out, send=None)
        elif isinstance(event, c.DialResult):
            step = self._step
            if wait == "dial" and isinstance(step, DialStep) and event.target == step.target:
                self._advance(out, send=event)
        elif isinstance(event, c.QueueResult):
            step = self._step
            if wait == "enqueue" and isinstance(step, EnqueueStep) and event.queue == step.queue:
                self._advance(out, send=event)
        elif isinstance(event, c.QueueUpdate) and self.call is not None:
            self.call.queue_position = event.position
        # Answered, TransferResult and AgentAssigned need nothing from the flow.

    def _on_collect_digits(self, digits: str, out: list[c.Command]) -> None:
        for ch in digits.upper():
            step = self._step  # digits after a finished entry are type-ahead for the next
            if self._wait != "collect" or not isinstance(step, CollectStep):
                return  # the flow moved on to something else: the rest is dropped
            if ch not in DIGIT_CHARS:
                continue
            if self._play is not None:
                self._stop_play(out)  # barge-in
            if step.terminator and ch == step.terminator:
                self._finish_collect(out)
                continue
            self._digits += ch
            if len(self._digits) >= step.max_digits:
                self._finish_collect(out)
            else:
                self._start_input_timer(out, first=False)

    def _finish_collect(self, out: list[c.Command]) -> None:
        step = self._step
        assert isinstance(step, CollectStep)
        self._cancel(_INPUT_TIMER, out)
        digits, self._digits = self._digits, ""
        self._advance(out, send=digits if len(digits) >= step.min_digits else None)

    def _on_hangup(self, cause: str) -> None:
        self._hung_up = True
        self._done = True
        self._wait = ""
        self._play = None
        self._timers.clear()
        gen, self._gen = self._gen, None
        if gen is None:
            return
        try:
            gen.throw(CallerHungUp(cause))
        except (CallerHungUp, StopIteration):
            return
        except Exception:
            log.exception("%s failed while handling the hangup", self.name, extra=self._extra())
            return
        # It yielded again: the call is gone, nothing more is executed for it.
        log.warning("%s ignored the hangup; closing it", self.name, extra=self._extra())
        self._close(gen)

    # ---------------------------------------------------------------- running the generator
    def _advance(self, out: list[c.Command], send: Any) -> None:
        """Resume the flow with ``send`` and run steps until one has to wait."""
        self._wait = ""
        self._step = None
        self._cancel(_STEP_TIMER, out)
        gen = self._gen
        while gen is not None and not self._done:
            try:
                step = gen.send(send)
            except StopIteration:
                self._gen = None
                self._end(c.Hangup(), out)
                return
            except Exception as exc:
                self._gen = None
                self._fail(exc, out)
                return
            self._steps += 1
            try:
                if not isinstance(step, STEP_TYPES):
                    raise FlowError(f"{self.name} yielded {step!r}, which is not a step "
                                    f"(use answer(), play(), collect() ...)")
                if self._steps > self.options.max_steps:
                    raise FlowError(f"more than {self.options.max_steps} steps")
                waits, send = self._begin(step, out)
            except Exception as exc:
                self._fail(exc, out)
                return
            if waits:
                return

    def _begin(self, step: Step, out: list[c.Command]) -> tuple[bool, Any]:
        """Start ``step``: (True, None) if it waits for an event, else (False, its result)."""
        call = self.call
        assert call is not None
        if isinstance(step, AnswerStep):
            self._answer(out)
            return False, None
        if isinstance(step, SetVarStep):
            call.variables[step.name] = step.value
            out.append(c.SetVariable(step.name, step.value))
            return False, None
        if isinstance(step, GetVarStep):
            return False, call.variables.get(step.name)
        if isinstance(step, TransferStep | HangupStep):
            cmd = c.Transfer(step.destination) if isinstance(step, TransferStep) else \
                c.Hangup(step.cause)
            self._end(cmd, out)
            return True, None
        self._step = step
        if isinstance(step, DialStep | EnqueueStep):
            self._quiet(out)  # nothing runs while the engine or queue has the caller
            if isinstance(step, DialStep):
                self._wait = "dial"
                out.append(c.Dial(step.target, step.kind, step.timeout))
            else:
                self._wait = "enqueue"
                out.append(c.Enqueue(step.queue, step.priority))
            return True, None
        self._answer(out)
        if isinstance(step, PauseStep):
            self._wait = "pause"
            self._timer(_PAUSE_TIMER, step.seconds, out)
        elif isinstance(step, PlayStep):
            self._wait = "play"
            self._start_play(step.prompts, step.language, step.interruptible, out)
        else:
            self._wait = "collect"
            self._digits = ""
            if step.prompts:
                self._start_play(step.prompts, step.language, True, out)
            else:
                self._start_input_timer(out, first=True)
        self._timer(_STEP_TIMER, self.options.step_timeout, out)  # after: ties go to the step
        return True, None

    # ---------------------------------------------------------------- endings
    def _fail(self, exc: BaseException, out: list[c.Command]) -> None:
        """End the call politely: the error prompt, then a hangup; log why."""
        self.error = f"{type(exc).__name__}: {exc}"
        call_id = self.call.call_id if self.call else "?"
        log.error("%s failed on call %s: %s", self.name, call_id, self.error,
                  exc_info=not isinstance(exc, FlowError), extra=self._extra())
        gen, self._gen = self._gen, None
        if gen is not None:
            self._close(gen)
        if self._done:
            return
        self._quiet(out)
        self._step = None
        prompts = self.options.error_prompt
        if not prompts:
            self._end(c.Hangup(FAILURE_CAUSE), out)
            return
        self._answer(out)
        self._wait = "ending"
        self._start_play(prompts, self.options.language, False, out)
        self._timer(_STEP_TIMER, self.options.step_timeout, out)

    def _end(self, cmd: c.Hangup | c.Transfer, out: list[c.Command]) -> None:
        self._quiet(out)
        out.append(cmd)
        self._done = True
        self._wait = ""
        gen, self._gen = self._gen, None
        if gen is not None:
            self._close(gen)

    def _close(self, gen: Flow) -> None:
        try:
            gen.close()  # runs the flow's finally blocks
        except Exception as exc:  # no traceback kept: it would keep the generator alive
            log.warning("%s could not be closed cleanly: %s", self.name, str(exc),
                        extra=self._extra())

    # ---------------------------------------------------------------- commands
    def _answer(self, out: list[c.Command]) -> None:
        if not self._answered:
            self._answered = True
            out.append(c.Answer())

    def _start_play(self, prompts: tuple[c.Prompt, ...], language: str, interruptible: bool,
                    out: list[c.Command]) -> None:
        self._seq += 1
        self._play = f"app{self._seq}"
        out.append(c.Play(self._play, prompts, c.ALL_KEYS if interruptible else "",
                          language or self.options.language))

    def _stop_play(self, out: list[c.Command]) -> None:
        if self._play is not None:
            out.append(c.StopPlay(self._play))
            self._play = None

    def _start_input_timer(self, out: list[c.Command], first: bool) -> None:
        step = self._step
        assert isinstance(step, CollectStep)
        seconds = step.timeout if first else step.inter_digit_timeout
        if seconds is None:
            self._cancel(_INPUT_TIMER, out)  # wait for the caller (the step timeout bounds it)
        else:
            self._timer(_INPUT_TIMER, seconds, out)

    def _timer(self, name: str, seconds: float, out: list[c.Command]) -> None:
        self._timers.add(name)
        out.append(c.StartTimer(name, seconds))

    def _cancel(self, name: str, out: list[c.Command]) -> None:
        if name in self._timers:
            self._timers.discard(name)
            out.append(c.CancelTimer(name))

    def _quiet(self, out: list[c.Command]) -> None:
        self._stop_play(out)
        for name in sorted(self._timers):
            out.append(c.CancelTimer(name))
        self._timers.clear()

    def _extra(self) -> dict[str, str]:
        return {"call_id": self.call.call_id if self.call else "", "app": self.name}


# ---------------------------------------------------------------- the app


_DIALABLE = re.compile(r"[0-9*#+A-Za-z_-]+")


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str
    handler: Handler
    options: FlowOptions
    regex: re.Pattern[str] | None  # None: an exact number
    app: str = "app"  # the App it was declared on (flow names in logs)

    def matches(self, called: str) -> bool:
        return self.regex.fullmatch(called) is not None if self.regex else called == self.pattern


class App:
    """Routes called numbers to flows; a flow factory (``app(call_info) -> CallFlow | None``)
    that plugs into ``CALLYARD_APPS=module:app``.

    ``@app.route("8000")`` matches one number exactly; a pattern with regex syntax
    (``r"^8\\d{3}$"``) matches with ``re.fullmatch``. Exact numbers win, then patterns in the
    order they were added. ``error_prompt``, ``step_timeout`` and ``max_steps`` set how
    failing flows are contained (module docstring).
    """

    def __init__(
        self,
        name: str = "app",
        *,
        error_prompt: Iterable[c.Prompt | str] | c.Prompt | str = DEFAULT_ERROR_PROMPT,
        step_timeout: float = 60.0,
        max_steps: int = 1000,
        language: str = "en",
    ) -> None:
        if isinstance(error_prompt, c.Prompt | str):
            error_prompt = (error_prompt,)
        self.name = name
        self.options = FlowOptions(_prompts(error_prompt), float(step_timeout), max_steps,
                                   language)
        self.routes: list[Route] = []

    def route(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: serve calls to ``pattern`` with the decorated generator function."""

        def register(handler: Handler) -> Handler:
            self.add_route(pattern, handler)
            return handler

        return register

    def add_route(self, pattern: str, handler: Handler) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a route is a number or a regular expression, got {pattern!r}")
        if not inspect.isgeneratorfunction(handler):
            raise TypeError(f"{getattr(handler, '__qualname__', handler)!r} is not a generator "
                            f"function: a flow yields steps (yield answer(), ...)")
        regex = None
        if not _DIALABLE.fullmatch(pattern):
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad route pattern {pattern!r}: {exc}") from None
        elif any(r.pattern == pattern for r in self.routes):
            raise ValueError(f"number {pattern!r} is routed twice")
        self.routes.append(Route(pattern, handler, self.options, regex, self.name))

    def include(self, other: App) -> None:
        """Add ``other``'s routes after this app's (each keeps its own options)."""
        self.routes.extend(other.routes)

    def match(self, called: str) -> Route | None:
        exact = next((r for r in self.routes if r.regex is None and r.matches(called)), None)
        return exact or next((r for r in self.routes if r.regex and r.matches(called)), None)

    def __call__(self, call: c.CallInfo) -> GeneratorFlow | None:
        route = self.match(call.called)
        if route is None:
            return None
        return GeneratorFlow(route.handler, route.options,
                             f"{route.app}:{route.handler.__qualname__}")

    def numbers(self) -> Mapping[str, str]:
        """Route pattern -> flow name, for listings."""
        return {r.pattern: r.handler.__qualname__ for r in self.routes}
