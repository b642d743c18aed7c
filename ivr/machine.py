"""The IVR call flow: one :class:`IvrCall` per call, a pure state machine.

``start(call)`` and ``handle(event)`` return the commands for the driver (see the contract in
:mod:`ivr.calls`). Behaviour:

* Entering a menu sets ``ivr_menu`` / ``ivr_menu_path`` (menus joined with ``/``), checks
  the menu's schedule (closed -> closed action; holiday -> holiday action, else closed
  action), then plays the greeting, interruptible. The first-digit timer starts when the
  greeting has finished.
* A digit during an interruptible prompt stops it (``StopPlay``) and counts as input
  (barge-in). Digits after a complete selection in the same ``Dtmf`` event are type-ahead
  for the next menu.
* Matching: an option nothing longer extends is taken as soon as it is complete; otherwise the
  entry ends with the terminator, at ``max_digits``, or after ``inter_digit_timeout``.
* Invalid entry / no entry: the invalid (timeout) prompt then the greeting again, until
  ``max_retries`` re-prompts were used; then the invalid (timeout) prompt and the exhausted
  action.
* ``play`` / ``set`` continue in the menu (waiting for input); other options play their
  prompt (not interruptible) before acting. ``back`` in the first menu repeats it.
* ``Enqueue`` / ``Dial`` wait for ``QueueResult`` / ``DialResult``: answered -> hang up;
  abandoned -> done; the caller left the queue -> the menu again; busy, no answer, failure,
  overflow or timeout -> the menu again (after ``max_retries`` such failures in one visit of
  the menu, its exhausted action). A queue result whose detail is ``menu:<name>`` (the queue's
  overflow or exit route) enters that menu. A failed attempt made by a fallback
  (exhausted/closed/holiday) action, or by the extension itself, ends the call.
* Moves made while the caller presses nothing are counted; past :data:`MAX_IDLE_HOPS` in a
  row the call is hung up, so no configuration can keep a silent call alive forever.
* ``voicemail`` hands the call to :class:`ivr.voicemail.Voicemail` (greeting, beep, record,
  review, goodbye); the call ends there. Also a menu's exhausted/closed/holiday action, and a
  queue result whose detail is ``voicemail:<mailbox>`` (the queue's overflow route).
* Stale ``PlayFinished`` / ``TimerFired`` (other ids than the current ones) are ignored.
  No event sequence makes it raise: an internal error ends the call with a ``Hangup``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from ivr import prompts as _prompts
from ivr.calls import (
    ALL_KEYS,
    Answer,
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
    QueueUpdate,
    SetVariable,
    StartTimer,
    StopPlay,
    TimerFired,
    Transfer,
)
from ivr.model import Action, Extension, Mailbox, Menu, Option
from ivr.schedules import Schedule
from ivr.voicemail import Voicemail

MAX_IDLE_HOPS = 20
_DIGITS = frozenset(ALL_KEYS + ALL_KEYS.lower())  # what a caller can key (A-D either case)
_HANGUP = Action("hangup")
FAILURE_CAUSE = "NORMAL_TEMPORARY_FAILURE"

# Phases.
_NEW, _MENU, _ANNOUNCE, _WAIT, _DONE = "new", "menu", "announce", "wait", "done"
_VOICEMAIL = "voicemail"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MenuSetView(Protocol):
    """What a call reads of its :class:`ivr.compile.MenuSet` (which builds calls with
    ``flow_for``, so this module does not import it)."""

    @property
    def version(self) -> int: ...
    @property
    def menus(self) -> Mapping[str, Menu]: ...
    @property
    def schedules(self) -> Mapping[str, Schedule]: ...
    @property
    def extensions(self) -> Mapping[str, Extension]: ...
    @property
    def mailboxes(self) -> Mapping[str, Mailbox]: ...


class IvrCall:
    """A call walking a :class:`~ivr.compile.MenuSet`; implements ``ivr.calls.CallFlow``."""

    __slots__ = (
        "_after",
        "_buf",
        "_call",
        "_clock",
        "_entry",
        "_failures",
        "_idle_hops",
        "_main",
        "_menu",
        "_pending",
        "_pending_idle",
        "_phase",
        "_play",
        "_retries",
        "_seq",
        "_stack",
        "_stop_keys",
        "_timer",
        "_timer_inter",
        "_vars",
        "_voicemail",
        "error",
        "menuset",
    )

    def __init__(
        self,
        menuset: MenuSetView,
        entry_menu: str | None = None,
        *,
        entry_action: Action | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if (entry_menu is None) == (entry_action is None):
            raise ValueError("give exactly one of entry_menu and entry_action")
        if entry_menu is not None and entry_menu not in menuset.menus:
            raise ValueError(f"menu {entry_menu!r} is not in menu set v{menuset.version}")
        self.menuset = menuset
        self._entry: Action = entry_action or Action("submenu", entry_menu or "")
        self._clock = clock or _utcnow
        self._phase = _NEW
        self._menu: Menu | None = None
        self._main = entry_menu or ""
        self._stack: list[str] = []
        self._retries = 0
        self._failures = 0  # failed queue/dial attempts in this menu visit
        self._buf = ""
        self._play: str | None = None
        self._stop_keys = ""  # the keys that stop the prompt playing (its Play's stop_keys)
        self._after: tuple[Action, bool] | None = None
        self._timer: str | None = None
        self._timer_inter = False
        self._pending: tuple[str, str] | None = None  # ("queue" | "dial", name)
        self._pending_idle = False
        self._idle_hops = 0
        self._seq = 0
        self._call: CallInfo | None = None
        self._vars: dict[str, str] = {}
        self._voicemail: Voicemail | None = None
        self.error: str | None = None  # set if an internal error ended the call

    @classmethod
    def for_extension(
        cls, menuset: MenuSetView, ext: Extension, *, clock: Callable[[], datetime] | None = None
    ) -> IvrCall:
        """The flow for a call to ``ext``: its menu, or straight to its queue/agent/user."""
        if ext.kind == "menu":
            return cls(menuset, ext.target, clock=clock)
        return cls(menuset, entry_action=Action("dial", ext.number), clock=clock)

    # ---------------------------------------------------------------- introspection
    @property
    def done(self) -> bool:
        return self._phase == _DONE

    @property
    def state(self) -> str:
        """new | menu | announce | wait | voicemail | done."""
        return self._phase

    @property
    def menu(self) -> str | None:
        return self._menu.name if self._menu else None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self._stack)

    # ---------------------------------------------------------------- CallFlow
    def start(self, call: CallInfo) -> list[Command]:
        if self._phase != _NEW:
            return []
        out: list[Command] = [Answer()]
        try:
            self._call = call
            self._vars = dict(call.variables)
            self._phase = _MENU
            self._run(self._entry, out, idle=True, entry=True)
        except Exception as exc:
            return self._crash(exc, out)
        return out

    def resume_queued(self, call: CallInfo, queue: str, menu_path: str) -> list[Command]:
        """Begin where a caller waits for ``queue``'s result, queued from the last menu of
        ``menu_path`` ("main/sales", from the queue entry) by a worker that died: the queue's
        result then goes on as if this flow had queued them (a ``menu:`` route, the exit key
        back to that menu, a failure's retry). Menus no longer in the set are skipped; with
        none left the caller counts as queued by the extension itself."""
        if self._phase != _NEW:
            return []
        self._call = call
        self._vars = {**call.variables, "queue": queue}
        self._stack = [name for name in menu_path.split("/") if name in self.menuset.menus]
        if self._stack:
            self._menu = self.menuset.menus[self._stack[-1]]
            self._main = self._main or self._stack[0]
        self._pending = ("queue", queue)
        self._pending_idle = not self._stack
        self._phase = _WAIT
        return []

    def handle(self, event: Event) -> list[Command]:
        phase = self._phase
        if phase is _DONE or phase is _NEW:
            return []
        out: list[Command] = []
        try:
            if phase is _VOICEMAIL and type(event) is not HungUp:
                return self._on_voicemail(event)
            # type(event) is X: mypy narrows it, and it is cheaper than a match on class
            # patterns (isinstance, ~0.1 us more per event on this hot path).
            if type(event) is Dtmf:
                if phase is _MENU:
                    self._on_digits(event.digits, out)
            elif type(event) is PlayFinished:
                if event.play_id == self._play:
                    self._on_play_finished(out)
            elif type(event) is TimerFired:
                if event.name == self._timer:
                    self._on_timer(out)
            elif type(event) is HungUp:
                self._phase = _DONE
                self._play = self._timer = None
            elif type(event) is QueueResult:
                self._on_queue_result(event, out)
            elif type(event) is DialResult:
                self._on_dial_result(event, out)
            elif type(event) is QueueUpdate:
                self._vars["queue_position"] = str(event.position)
            # Answered, TransferResult and AgentAssigned (the queue runtime's) need nothing.
        except Exception as exc:
            return self._crash(exc, out)
        return out

    def _crash(self, exc: Exception, out: list[Command]) -> list[Command]:
        self.error = f"{type(exc).__name__}: {exc}"
        self._phase = _DONE
        self._play = self._timer = None
        return [*out, Hangup(FAILURE_CAUSE)]

    # ---------------------------------------------------------------- events
    def _on_digits(self, digits: str, out: list[Command]) -> None:
        for ch in digits:
            if self._phase is not _MENU:
                return  # the selection moved on: the rest of this entry is dropped
            if ch not in _DIGITS:
                continue
            if self._play is not None:
                if ch.upper() not in self._stop_keys:
                    continue
                out.append(StopPlay(self._play))
                self._play = None
                self._after = None
            self._digit(ch, out)

    def _on_play_finished(self, out: list[Command]) -> None:
        self._play = None
        after, self._after = self._after, None
        if after is None:
            assert self._menu is not None  # a prompt plays in a menu
            self._start_timer(self._menu.first_digit_timeout, False, out)
        else:
            self._phase = _MENU
            self._run(after[0], out, idle=after[1])

    def _on_timer(self, out: list[Command]) -> None:
        self._timer = None
        if self._timer_inter:
            self._resolve(out)
        else:
            assert self._menu is not None  # a timer runs in a menu
            self._retry(self._menu.timeout_prompt, out)

    def _on_voicemail(self, event: Event) -> list[Command]:
        assert self._voicemail is not None  # set when the phase began
        commands, over = self._voicemail.handle(event)
        if over:
            self._phase = _DONE
        return commands

    def _on_queue_result(self, event: QueueResult, out: list[Command]) -> None:
        if self._phase is not _WAIT or self._pending != ("queue", event.queue):
            return
        self._pending = None
        outcome = event.outcome
        out.append(SetVariable("ivr_queue_result", outcome))
        if outcome == "answered":
            self._finish(Hangup(), out)
        elif outcome == "abandoned":
            self._phase = _DONE
        elif event.detail.startswith("menu:") and event.detail[5:] in self.menuset.menus:
            # The queue routed the caller to a menu (its overflow or exit-key action).
            self._phase = _MENU
            self._run(Action("submenu", event.detail[5:]), out, idle=outcome != "left")
        elif event.detail.startswith("voicemail:") and event.detail[10:] in self.menuset.mailboxes:
            self._start_voicemail(event.detail[10:], out)
        elif outcome == "left" and self._menu is not None:
            self._phase = _MENU
            self._idle_hops = 0
            self._enter(self._menu.name, out)
        else:
            self._attempt_failed(out)

    def _on_dial_result(self, event: DialResult, out: list[Command]) -> None:
        if self._phase is not _WAIT or self._pending != ("dial", event.target):
            return
        self._pending = None
        out.append(SetVariable("ivr_dial_result", event.outcome))
        if event.outcome == "answered":
            self._finish(Hangup(), out)
        else:
            self._attempt_failed(out)

    # ---------------------------------------------------------------- digits
    def _digit(self, ch: str, out: list[Command]) -> None:
        menu = self._menu
        assert menu is not None  # input and prompts happen in a menu
        if ch == menu.terminator:
            if self._buf:
                self._resolve(out)
            else:
                self._retry(menu.invalid_prompt, out)
            return
        buf = self._buf = self._buf + ch
        n = len(buf)
        if buf in menu.prefixes and n < menu.max_digits:
            self._start_timer(menu.inter_digit_timeout, True, out)
        elif buf in menu.by_digits or n >= menu.max_digits or n >= menu.longest:
            self._resolve(out)
        else:
            self._start_timer(menu.inter_digit_timeout, True, out)

    def _resolve(self, out: list[Command]) -> None:
        menu = self._menu
        assert menu is not None  # input and prompts happen in a menu
        self._cancel_timer(out)
        option = menu.by_digits.get(self._buf)
        self._buf = ""
        if option is None:
            self._retry(menu.invalid_prompt, out)
        else:
            self._select(option, out)

    def _retry(self, prefix: tuple[Prompt, ...], out: list[Command]) -> None:
        """Invalid or missing input: re-prompt, or the exhausted action when retries are up."""
        menu = self._menu
        assert menu is not None  # input and prompts happen in a menu
        self._buf = ""
        self._retries += 1
        if self._retries > menu.max_retries:
            self._announce(prefix, menu.exhausted, True, out)
        else:
            self._prompt(prefix + menu.greeting, out)

    def _select(self, option: Option, out: list[Command]) -> None:
        self._idle_hops = 0
        self._retries = 0
        self._vars["ivr_digits"] = option.digits
        action = option.action
        if action.kind == "set":
            self._set(action, out)
            self._prompt(option.prompts, out)
        elif action.kind == "play":
            self._prompt(option.prompts, out)
        else:
            self._announce(option.prompts, action, False, out)

    # ---------------------------------------------------------------- actions
    def _run(self, action: Action, out: list[Command], idle: bool, entry: bool = False) -> None:
        if idle:
            self._idle_hops += 1
            if self._idle_hops > MAX_IDLE_HOPS:
                self._finish(Hangup(), out)
                return
        kind = action.kind
        menu = self._menu
        if kind == "submenu":
            self._stack.append(action.target)
            self._enter(action.target, out)
        elif kind == "back" and menu is not None:
            if len(self._stack) > 1:
                self._stack.pop()
            self._enter(self._stack[-1], out)
        elif kind == "repeat" and menu is not None:
            self._enter(menu.name, out)
        elif kind == "main" and menu is not None:
            self._stack = [self._main]
            self._enter(self._main, out)
        elif kind == "enqueue":
            self._hand_over(Enqueue(action.queue, action.priority), ("queue", action.queue), out)
            self._pending_idle = idle or entry
            self._vars["queue"] = action.queue
        elif kind == "dial":
            self._dial(action.target, idle or entry, out)
        elif kind == "transfer":
            self._finish(Transfer(action.target), out)
        elif kind == "voicemail":
            self._start_voicemail(action.target, out)
        elif kind == "set" and menu is not None:  # only options use set; kept total anyway
            self._set(action, out)
            self._start_timer(menu.first_digit_timeout, False, out)
        else:  # hangup, or a menu move with no menu to move in
            self._finish(Hangup(), out)

    def _dial(self, number: str, final: bool, out: list[Command]) -> None:
        ext = self.menuset.extensions.get(number)
        if ext is None:
            self._finish(Hangup(FAILURE_CAUSE), out)
        elif ext.kind == "menu":
            if not self._main:
                self._main = ext.target
            self._stack.append(ext.target)
            self._enter(ext.target, out)
        elif ext.kind == "queue":
            self._hand_over(Enqueue(ext.target), ("queue", ext.target), out)
            self._pending_idle = final
            self._vars["queue"] = ext.target
        else:
            dial = Dial(ext.target, "agent") if ext.kind == "agent" else Dial(ext.target)
            self._hand_over(dial, ("dial", ext.target), out)
            self._pending_idle = final

    def _attempt_failed(self, out: list[Command]) -> None:
        """A queue or dial attempt did not connect: back to the menu, or end the call."""
        menu = self._menu
        if menu is None or self._pending_idle:
            self._finish(Hangup(), out)
            return
        self._phase = _MENU
        self._failures += 1
        if self._failures > menu.max_retries:
            self._run(menu.exhausted, out, idle=True)
        else:
            self._prompt(menu.greeting, out)

    def _start_voicemail(self, mailbox: str, out: list[Command]) -> None:
        self._quiet(out)
        self._phase = _VOICEMAIL
        self._vars["voicemail"] = mailbox
        out.append(SetVariable("ivr_voicemail", mailbox))
        language = self._menu.language if self._menu else "en"
        call_id = self._call.call_id if self._call else ""
        self._voicemail = Voicemail(self.menuset.mailboxes[mailbox], call_id, language,
                                    self._new_id, self._render)
        out += self._voicemail.start()

    def _set(self, action: Action, out: list[Command]) -> None:
        self._vars[action.variable] = action.value
        out.append(SetVariable(action.variable, action.value))

    # ---------------------------------------------------------------- menus and prompts
    def _enter(self, name: str, out: list[Command]) -> None:
        menu = self.menuset.menus[name]
        self._menu = menu
        self._phase = _MENU
        self._retries = self._failures = 0
        self._buf = ""
        self._quiet(out)
        out.append(SetVariable("ivr_menu", name))
        out.append(SetVariable("ivr_menu_path", "/".join(self._stack)))
        if menu.schedule is not None:
            state = self.menuset.schedules[menu.schedule].state(self._clock())
            if state != "open":
                action = (menu.holiday if state == "holiday" else None) or menu.closed or _HANGUP
                out.append(SetVariable("ivr_schedule", state))
                self._run(action, out, idle=True)
                return
        self._prompt(menu.greeting, out)

    def _render(self, prompts: tuple[Prompt, ...]) -> tuple[Prompt, ...]:
        return _prompts.render(prompts, self._context) if prompts else prompts

    def _context(self) -> Mapping[str, Any]:
        call = self._call
        position = self._vars.get("queue_position", "")
        return {
            "caller": call.caller if call else "",
            "caller_name": call.caller_name if call else "",
            "called": call.called if call else "",
            "call_id": call.call_id if call else "",
            "engine": call.engine if call else "",
            "menu": self._menu.name if self._menu else "",
            "menu_path": "/".join(self._stack),
            "language": self._menu.language if self._menu else "en",
            "digits": self._vars.get("ivr_digits", ""),
            "queue": self._vars.get("queue", ""),
            "queue_position": int(position) if position.isdigit() else 0,
            "vars": dict(self._vars),
        }

    def _new_id(self) -> str:
        self._seq += 1
        return f"ivr{self._seq}"

    def _prompt(self, prompts: tuple[Prompt, ...], out: list[Command]) -> None:
        """Play interruptible prompts in the current menu, then wait for the first digit."""
        menu = self._menu
        assert menu is not None  # input and prompts happen in a menu
        self._quiet(out)
        rendered = self._render(prompts)
        if not rendered:
            self._start_timer(menu.first_digit_timeout, False, out)
            return
        play_id = self._new_id()
        out.append(Play(play_id, rendered, ALL_KEYS, menu.language))
        self._play = play_id
        self._stop_keys = ALL_KEYS
        self._after = None

    def _announce(
        self, prompts: tuple[Prompt, ...], then: Action, idle: bool, out: list[Command]
    ) -> None:
        """Play prompts nobody can interrupt, then run ``then``."""
        self._quiet(out)
        rendered = self._render(prompts)
        if not rendered:
            self._run(then, out, idle)
            return
        play_id = self._new_id()
        lang = self._menu.language if self._menu else "en"
        out.append(Play(play_id, rendered, "", lang))
        if then.kind == "hangup":
            # nothing follows but the end: the engine hangs up as the prompts end, sparing
            # the caller the round trip of PlayFinished through the worker (20-40 ms)
            out.append(Hangup(after_play=play_id))
            self._play = None
            self._phase = _DONE
            return
        self._phase = _ANNOUNCE
        self._play = play_id
        self._stop_keys = ""
        self._after = (then, idle)

    # ---------------------------------------------------------------- timers and endings
    def _start_timer(self, seconds: float, inter: bool, out: list[Command]) -> None:
        if self._timer is not None:
            out.append(CancelTimer(self._timer))
        self._seq += 1
        name = self._timer = f"ivr.timer{self._seq}"
        self._timer_inter = inter
        out.append(StartTimer(name, seconds))

    def _cancel_timer(self, out: list[Command]) -> None:
        if self._timer is not None:
            out.append(CancelTimer(self._timer))
            self._timer = None

    def _quiet(self, out: list[Command]) -> None:
        self._cancel_timer(out)
        if self._play is not None:
            out.append(StopPlay(self._play))
            self._play = None
            self._after = None

    def _hand_over(self, cmd: Enqueue | Dial, pending: tuple[str, str], out: list[Command]) -> None:
        self._quiet(out)
        out.append(cmd)
        self._phase = _WAIT
        self._pending = pending

    def _finish(self, cmd: Hangup | Transfer, out: list[Command]) -> None:
        self._quiet(out)
        out.append(cmd)
        self._phase = _DONE
