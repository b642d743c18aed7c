"""The menu model, in two layers.

* Definitions (``*Def``): what an operator wrote, as plain strings and numbers, exactly as
  stored in PostgreSQL (or sent to the API). Nothing is checked when they are built;
  :func:`ivr.validate.validate` reports every problem with a message naming menu and option.
* Runtime model (:class:`Menu`, :class:`Option`, :class:`Action`, :class:`Schedule`,
  :class:`Extension`): immutable, parsed and indexed, built by :func:`ivr.compile.compile_menuset`
  only from definitions that validated. The state machine reads only this layer.

Prompt specs are ``kind:value`` strings (``file:ivr/welcome``, ``tts:Hello {{ caller }}``,
``digits:1234``, ``number:42``, ``silence:500``) parsed into :class:`ivr.calls.Prompt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, time
from typing import Literal, cast, get_args

from ivr.calls import Prompt, PromptKind

ActionKind = Literal[
    "submenu", "back", "repeat", "main", "enqueue", "dial", "transfer", "play", "set", "hangup"
]
ACTION_KINDS: frozenset[str] = frozenset(get_args(ActionKind))
# Actions that hand the call away (the call leaves the menu for good unless a result says the
# attempt failed).
TERMINAL_ACTIONS: frozenset[str] = frozenset({"enqueue", "dial", "transfer", "hangup"})
ExtensionKind = Literal["menu", "queue", "agent", "user"]
EXTENSION_KINDS: frozenset[str] = frozenset(get_args(ExtensionKind))
PROMPT_KINDS: frozenset[str] = frozenset(get_args(PromptKind))

DIGITS_RE = re.compile(r"^[0-9*#]{1,20}$")
VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
EXTENSION_RE = re.compile(r"^[0-9*#+]{1,32}$")
DESTINATION_RE = re.compile(r"^[0-9A-Za-z+*#@._:/-]{1,128}$")
QUEUE_TARGET_RE = re.compile(r"^(?P<queue>[^:\s]+)(?::(?P<priority>-?[0-9]{1,6}))?$")
MAX_SILENCE_MS = 60_000


class PromptSpecError(ValueError):
    """A prompt spec string that cannot be parsed; the message says why."""


def is_template(value: str) -> bool:
    """Whether a prompt value holds jinja2 syntax and must be rendered per call."""
    return "{{" in value or "{%" in value


def parse_prompt(spec: str) -> Prompt:
    """Parse ``kind:value`` into a :class:`Prompt`, or raise :class:`PromptSpecError`."""
    kind, sep, value = spec.partition(":")
    kind = kind.strip()
    if not sep or kind not in PROMPT_KINDS:
        raise PromptSpecError(
            f"prompt {spec!r} must look like kind:value with kind one of "
            f"{', '.join(sorted(PROMPT_KINDS))} (e.g. file:ivr/welcome)"
        )
    if kind != "tts":
        value = value.strip()
    if not value.strip():
        raise PromptSpecError(f"prompt {spec!r} has an empty value")
    if not is_template(value):
        check_prompt_value(cast(PromptKind, kind), value, spec)
    return Prompt(cast(PromptKind, kind), value)


def check_prompt_value(kind: PromptKind, value: str, spec: str) -> None:
    """Raise :class:`PromptSpecError` when ``value`` is not playable as ``kind``."""
    if kind == "digits" and not re.fullmatch(r"[0-9*#A-Da-d]+", value):
        raise PromptSpecError(f"prompt {spec!r}: digits may only hold 0-9, *, # and A-D")
    if kind == "number" and not re.fullmatch(r"-?[0-9]{1,15}", value):
        raise PromptSpecError(f"prompt {spec!r}: number must be a whole number")
    if kind == "silence" and (not value.isdigit() or not 0 < int(value) <= MAX_SILENCE_MS):
        raise PromptSpecError(
            f"prompt {spec!r}: silence is a number of milliseconds from 1 to {MAX_SILENCE_MS}"
        )
    if kind == "file" and any(c.isspace() for c in value):
        raise PromptSpecError(f"prompt {spec!r}: a file name may not contain spaces")


def prompt_spec(prompt: Prompt) -> str:
    return f"{prompt.kind}:{prompt.value}"


# ---------------------------------------------------------------- definitions (raw input)


@dataclass(frozen=True, slots=True)
class OptionDef:
    digits: str
    action: str
    target: str = ""
    prompt: tuple[str, ...] = ()
    position: int = 0


@dataclass(frozen=True, slots=True)
class MenuDef:
    name: str
    greeting: tuple[str, ...] = ()
    invalid_prompt: tuple[str, ...] = ()
    timeout_prompt: tuple[str, ...] = ()
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 2.0
    max_digits: int = 1
    terminator: str = "#"
    max_retries: int = 3
    exhausted_action: str = "hangup"
    exhausted_target: str = ""
    schedule: str | None = None  # schedule name
    closed_action: str | None = None
    closed_target: str = ""
    holiday_action: str | None = None
    holiday_target: str = ""
    language: str = "en"
    options: tuple[OptionDef, ...] = ()


@dataclass(frozen=True, slots=True)
class HoursDef:
    weekday: int  # 0 = Monday
    opens: time
    closes: time  # 00:00 = midnight at the end of the day; before ``opens`` = overnight


@dataclass(frozen=True, slots=True)
class ClosureDef:
    name: str
    starts_on: date
    ends_on: date  # inclusive


@dataclass(frozen=True, slots=True)
class ScheduleDef:
    name: str
    timezone: str
    hours: tuple[HoursDef, ...] = ()
    closures: tuple[ClosureDef, ...] = ()


@dataclass(frozen=True, slots=True)
class ExtensionDef:
    number: str
    kind: str  # menu | queue | agent | user
    target: str  # menu name, queue name, agent id or dial target


@dataclass(frozen=True, slots=True)
class MenuSource:
    """Everything a menu set is compiled from."""

    menus: tuple[MenuDef, ...] = ()
    schedules: tuple[ScheduleDef, ...] = ()
    extensions: tuple[ExtensionDef, ...] = ()
    queues: frozenset[str] = frozenset()


# ---------------------------------------------------------------- runtime model


@dataclass(frozen=True, slots=True)
class Action:
    """What to do; ``target`` is interpreted per kind (already validated)."""

    kind: ActionKind
    target: str = ""
    # Parsed forms of the target, filled by :func:`parse_action`.
    queue: str = ""
    priority: int = 0
    variable: str = ""
    value: str = ""

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_ACTIONS


def parse_action(kind: str, target: str) -> Action:
    """Build an :class:`Action` from a validated kind and target."""
    target = target or ""
    if kind == "enqueue":
        m = QUEUE_TARGET_RE.match(target.strip())
        if not m:
            raise ValueError(f"enqueue target {target!r} must be queue or queue:priority")
        return Action("enqueue", target, queue=m["queue"], priority=int(m["priority"] or 0))
    if kind == "set":
        name, _, value = target.partition("=")
        return Action("set", target, variable=name.strip(), value=value)
    if kind not in ACTION_KINDS:
        raise ValueError(f"unknown action {kind!r}")
    return Action(cast(ActionKind, kind), target.strip())


@dataclass(frozen=True, slots=True)
class Option:
    digits: str
    action: Action
    prompts: tuple[Prompt, ...] = ()


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    greeting: tuple[Prompt, ...]
    invalid_prompt: tuple[Prompt, ...]
    timeout_prompt: tuple[Prompt, ...]
    first_digit_timeout: float
    inter_digit_timeout: float
    max_digits: int
    terminator: str
    max_retries: int
    exhausted: Action
    schedule: str | None
    closed: Action | None
    holiday: Action | None
    language: str
    options: tuple[Option, ...]
    # Derived lookups for digit matching (not serialised).
    by_digits: dict[str, Option] = field(init=False, repr=False, compare=False)
    prefixes: frozenset[str] = field(init=False, repr=False, compare=False)
    longest: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_digits = {o.digits: o for o in self.options}
        prefixes = {o.digits[:i] for o in self.options for i in range(1, len(o.digits))}
        object.__setattr__(self, "by_digits", by_digits)
        object.__setattr__(self, "prefixes", frozenset(prefixes))
        object.__setattr__(self, "longest", max((len(d) for d in by_digits), default=0))


@dataclass(frozen=True, slots=True)
class Extension:
    number: str
    kind: ExtensionKind
    target: str
