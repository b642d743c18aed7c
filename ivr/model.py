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
    "submenu", "back", "repeat", "main", "enqueue", "dial", "transfer", "play", "set", "hangup",
    "voicemail",
]
ACTION_KINDS: frozenset[str] = frozenset(get_args(ActionKind))
# Actions that hand the call away (the call leaves the menu for good unless a result says the
# attempt failed).
TERMINAL_ACTIONS: frozenset[str] = frozenset(
    {"enqueue", "dial", "transfer", "hangup", "voicemail"}
)
ExtensionKind = Literal["menu", "queue", "agent", "user"]
EXTENSION_KINDS: frozenset[str] = frozenset(get_args(ExtensionKind))
PROMPT_KINDS: frozenset[str] = frozenset(get_args(PromptKind))

DIGITS_RE = re.compile(r"^[0-9*#]{1,20}$")
VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
EXTENSION_RE = re.compile(r"^[0-9*#+]{1,32}$")
DESTINATION_RE = re.compile(r"^[0-9A-Za-z+*#@._:/-]{1,128}$")
QUEUE_TARGET_RE = re.compile(r"^(?P<queue>[^:\s]+)(?::(?P<priority>-?[0-9]{1,6}))?$")
MAX_SILENCE_MS = 60_000

# ---------------------------------------------------------------- what may be stored
# The shapes the database accepts (migrations 001 and 003 check the same rules in SQL, and
# the API schema applies them too; tests/test_store_rules.py holds the three together).

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # names of menus, queues, agents ...
ENQUEUE_TARGET_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}(:-?[0-9]{1,6})?$")
# Text an engine receives must not hold control characters (a line break ends an ESL header,
# and "\n\n" the whole command, so what follows runs as a command of its own) nor "${"
# (FreeSWITCH expands ${...} in application arguments, ${system(...)} included).
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A file prompt names a sound relative to the engine's sounds directory: parts of letters,
# digits, _ . - separated by "/", none starting with a dot (no "..", no absolute path, no URL).
SOUND_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
# Prefixes of variables the engines act on (FreeSWITCH runs what api_hangup_hook,
# execute_on_answer, exec_after_bridge_app, bridge_pre_execute_* ... name; sip_h_* adds SIP
# headers; hangup_/transfer_/park_after_bridge reroute the call ...) and Callyard's own.
RESERVED_VARIABLE_PREFIXES = (
    "absolute", "answer", "api", "asr", "bind", "bridge", "bypass", "call", "callyard", "campon",
    "cc", "codec", "conference", "continue", "default", "detect", "dialed", "digit", "disable",
    "domain", "dtmf", "early", "effective", "enable", "exec", "execute", "export", "failure",
    "fax", "fifo", "fire", "force", "group", "hangup", "hold", "ignore", "inherit", "instant",
    "intercept", "ivr", "jitterbuffer", "leg", "limit", "local", "loopback", "lua", "max",
    "media", "monitor", "origination", "originate", "originator", "outbound", "park",
    "playback", "presence", "process", "progress", "proxy", "read", "record", "recording",
    "ringback", "rtcp", "rtp", "sched", "session", "signal", "sip", "socket", "sound", "srtp",
    "suppress", "t38", "temp", "timezone", "tod", "tone", "transfer", "tts", "user", "uuid",
    "valet", "verto", "video", "vm", "voicemail", "wait", "zrtp",
)  # fmt: skip
# The variables a menu's `set` action may write: lowercase names, up to 32 characters,
# outside the reserved prefixes and not ending in _hook. Engine variables that make the
# engine act can therefore never be set from a menu. (Call-flow apps are code, not data:
# they may set any name of letters, digits and _, see VARIABLE_RE.)
SET_VARIABLE_RE = re.compile(
    rf"^(?!(?:{'|'.join(RESERVED_VARIABLE_PREFIXES)})(?:_|$))(?!.*_hook$)[a-z][a-z0-9_]{{0,31}}$"
)
MAX_TARGET = 128
MAX_PROMPT_SPEC = 1000
MAX_PROMPTS = 20
NO_TARGET_ACTIONS = frozenset({"back", "repeat", "main", "play", "hangup"})
_TARGET_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "submenu": (SLUG_RE, "a menu name (lowercase letters, digits, _ and -)"),
    "enqueue": (ENQUEUE_TARGET_RE, "queue or queue:priority"),
    "dial": (EXTENSION_RE, "an extension number (0-9, *, # and +)"),
    "transfer": (DESTINATION_RE, "a number or address (letters, digits and + * # @ . _ : / -)"),
    "voicemail": (SLUG_RE, "a mailbox name (lowercase letters, digits, _ and -)"),
}
# Voicemail: how long a message may be (seconds), and the prompts the caller hears (sounds of
# the demo's set, `callyard sounds`). A mailbox's own greeting replaces the first.
MAILBOX_MAX_SECONDS = (5, 600)
VOICEMAIL_GREETING = "file:voicemail/greeting"  # leave a message after the tone, # when done
VOICEMAIL_REVIEW = "file:voicemail/review"  # 1 to keep it, 2 to record it again
VOICEMAIL_SAVED = "file:voicemail/saved"  # saved, goodbye
VOICEMAIL_REVIEW_SECONDS = 5.0  # no key after the review prompt: the message is kept
_PROMPT_SPEC_RE = re.compile(r"^(file|tts|digits|number|silence):.*[^ ]", re.DOTALL)


def is_safe_text(value: str) -> bool:
    """Whether ``value`` may reach an engine (cheap: drivers check every value they write)."""
    return "${" not in value and CONTROL_RE.search(value) is None


def unsafe_text_problem(value: str) -> str | None:
    """Why ``value`` may not reach an engine (None when it may)."""
    if "${" in value:
        return "must not contain '${' (engine variable expansion)"
    if found := CONTROL_RE.search(value):
        return f"must not contain control characters (found {found.group()!r})"
    return None


def set_target_problem(target: str) -> str | None:
    """Why ``target`` is not a valid ``set`` target ``name=value`` (None when it is)."""
    name, eq, value = target.partition("=")
    if not eq or not SET_VARIABLE_RE.fullmatch(name):
        return (
            "must be name=value with a lowercase name of letters, digits and _ (up to 32) that "
            "is not an engine's own: no api_, execute_, exec_, bridge_, sip_, hangup_ ... "
            "prefix and no _hook ending"
        )
    problem = unsafe_text_problem(value)
    return f"value {problem}" if problem else None


def target_problem(action: str, target: str | None) -> str | None:
    """Why ``target`` is not well-formed for ``action`` (None when it is); the database's
    ``callyard_valid_action``. Whether the menu, queue or extension exists is validation's
    business (:mod:`ivr.validate`)."""
    if action in NO_TARGET_ACTIONS:
        return None if target is None else f"{action} takes no target"
    if action == "set":
        if target is None or len(target) > MAX_TARGET:
            return f"set target is name=value, at most {MAX_TARGET} characters"
        return set_target_problem(target)
    rule = _TARGET_RULES.get(action)
    if rule is None:
        return f"unknown action {action!r}"
    if target is None or not rule[0].fullmatch(target):
        return f"{action} target must be {rule[1]}"
    return None


def stored_prompt_problem(spec: str) -> str | None:
    """Why a prompt spec may not be stored (None when it may); the database's
    ``callyard_valid_prompt``. Values that are templates are checked when rendered."""
    if len(spec) > MAX_PROMPT_SPEC:
        return f"a prompt is at most {MAX_PROMPT_SPEC} characters"
    if not _PROMPT_SPEC_RE.match(spec):
        return "a prompt is kind:value, kind one of digits, file, number, silence, tts"
    problem = unsafe_text_problem(spec)
    if problem:
        return f"a prompt {problem}"
    kind, _, value = spec.partition(":")
    sound = value.strip(" ")
    if kind == "file" and not is_template(value) and not SOUND_NAME_RE.fullmatch(sound):
        return "a file prompt names a sound relative to the sounds directory (no URL, no '..')"
    return None


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
    elif problem := unsafe_text_problem(value):  # rendered values are checked when rendered
        raise PromptSpecError(f"prompt {spec!r} {problem}")
    return Prompt(cast(PromptKind, kind), value)


def check_prompt_value(kind: PromptKind, value: str, spec: str) -> None:
    """Raise :class:`PromptSpecError` when ``value`` is not playable as ``kind`` or may not
    reach an engine."""
    if problem := unsafe_text_problem(value):
        raise PromptSpecError(f"prompt {spec!r} {problem}")
    if kind == "digits" and not re.fullmatch(r"[0-9*#A-Da-d]+", value):
        raise PromptSpecError(f"prompt {spec!r}: digits may only hold 0-9, *, # and A-D")
    if kind == "number" and not re.fullmatch(r"-?[0-9]{1,15}", value):
        raise PromptSpecError(f"prompt {spec!r}: number must be a whole number")
    if kind == "silence" and (not value.isdigit() or not 0 < int(value) <= MAX_SILENCE_MS):
        raise PromptSpecError(
            f"prompt {spec!r}: silence is a number of milliseconds from 1 to {MAX_SILENCE_MS}"
        )
    if kind == "file" and not SOUND_NAME_RE.fullmatch(value):
        raise PromptSpecError(
            f"prompt {spec!r}: a file is a sound name relative to the sounds directory "
            "(letters, digits, _ . - and /; no URL, no absolute path, no '..')"
        )


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
class MailboxDef:
    """A voicemail box: the ``voicemail`` action's target."""

    name: str
    greeting: tuple[str, ...] = ()  # () = the standard greeting (VOICEMAIL_GREETING)
    max_seconds: int = 120
    review: bool = False  # after #: 1 keeps the message, 2 records it again


@dataclass(frozen=True, slots=True)
class MenuSource:
    """Everything a menu set is compiled from."""

    menus: tuple[MenuDef, ...] = ()
    schedules: tuple[ScheduleDef, ...] = ()
    extensions: tuple[ExtensionDef, ...] = ()
    queues: frozenset[str] = frozenset()
    mailboxes: tuple[MailboxDef, ...] = ()


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
class Mailbox:
    name: str
    greeting: tuple[Prompt, ...]
    max_seconds: int
    review: bool


@dataclass(frozen=True, slots=True)
class Extension:
    number: str
    kind: ExtensionKind
    target: str
