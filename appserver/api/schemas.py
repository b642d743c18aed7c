"""Request and response bodies of the REST API, with a limit on every field.

These mirror the repositories' dataclasses (``appserver/store``) and apply exactly the rules
the database checks (migrations 001 and 003, shared with :mod:`ivr.model`): whatever the
database holds reads back through the API, and whatever the API accepts is stored
(``tests/test_api_input.py`` writes every valid shape by SQL and reads it back).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from appserver.queues.model import CALLBACK_ENDPOINT_RE
from ivr.model import (
    DESTINATION_RE,
    EXTENSION_RE,
    MAX_PROMPT_SPEC,
    MAX_PROMPTS,
    MAX_TARGET,
    SLUG_RE,
    is_template,
    stored_prompt_problem,
    target_problem,
)


def _rule(problem: Callable[[str], str | None]) -> AfterValidator:
    """A pydantic check from a function saying what is wrong with a value (None: nothing)."""

    def check(value: str) -> str:
        if (why := problem(value)) is not None:
            raise ValueError(why)
        return value

    return AfterValidator(check)


Slug = Annotated[str, StringConstraints(pattern=SLUG_RE.pattern)]
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9*#]{1,20}$")]
Number = Annotated[str, StringConstraints(pattern=EXTENSION_RE.pattern)]
Text = Annotated[str, StringConstraints(max_length=1000)]
_CONTROL = r"\x00-\x1f\x7f-\x9f"
# 1-100 characters, not blank, no control characters (the database's callyard_is_label)
Label = Annotated[str, StringConstraints(
    min_length=1, max_length=100, pattern=rf"^[^{_CONTROL}]*[^ {_CONTROL}][^{_CONTROL}]*$"
)]
Target = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TARGET)]
# "kind:value", e.g. "file:demo/welcome", "tts:Hello {{ caller }}"
PromptSpec = Annotated[
    str,
    StringConstraints(pattern=r"^(file|tts|digits|number|silence):", max_length=MAX_PROMPT_SPEC),
    _rule(stored_prompt_problem),
]
Prompts = Annotated[list[PromptSpec], Field(max_length=MAX_PROMPTS)]
ActionKind = Literal[
    "submenu", "back", "repeat", "main", "enqueue", "dial", "transfer", "play", "set", "hangup",
    "voicemail",
]
# Where a queue sends a caller on overflow or exit key (the database's callyard_valid_route).
QueueAction = Literal["hangup", "queue", "menu", "extension", "voicemail"]
Skills = Annotated[dict[Annotated[str, StringConstraints(pattern=SLUG_RE.pattern)],
                        Annotated[int, Field(ge=1, le=10)]], Field(max_length=50)]


def _check_action(what: str, action: str | None, target: str | None) -> None:
    if action is None:
        if target is not None:
            raise ValueError(f"{what}_target: set only together with {what}_action")
    elif (why := target_problem(action, target)) is not None:
        raise ValueError(f"{what}_target: {why}")


def _check_route(what: str, action: str | None, target: str | None) -> None:
    if action is None or action == "hangup":
        ok, needs = target is None, "no target"
    elif action == "extension":
        ok, needs = target is not None and EXTENSION_RE.fullmatch(target) is not None, "a number"
    else:
        ok, needs = target is not None and SLUG_RE.fullmatch(target) is not None, f"a {action} name"
    if not ok:
        raise ValueError(f"{what}_target: {action or 'no action'} takes {needs}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------- menus


class MenuOptionIn(Strict):
    digits: Digits
    action: ActionKind
    target: Target | None = None
    prompt: Prompts | None = None
    position: int = Field(0, ge=0, le=1000)

    @model_validator(mode="after")
    def _action_target(self) -> MenuOptionIn:
        if (why := target_problem(self.action, self.target)) is not None:
            raise ValueError(why)
        if self.action == "play" and not self.prompt:
            raise ValueError("play needs the option's prompt")
        return self


class MenuIn(Strict):
    description: Text = ""
    greeting: Prompts = []
    invalid_prompt: Prompts | None = None
    timeout_prompt: Prompts | None = None
    first_digit_timeout: float = Field(5.0, ge=0.5, le=60)
    inter_digit_timeout: float = Field(2.0, ge=0.2, le=30)
    max_digits: int = Field(1, ge=1, le=20)
    terminator: Literal["#", "*", ""] = "#"
    max_retries: int = Field(3, ge=0, le=10)
    exhausted_action: ActionKind = "hangup"
    exhausted_target: Target | None = None
    schedule: Slug | None = None
    closed_action: ActionKind | None = None
    closed_target: Target | None = None
    holiday_action: ActionKind | None = None
    holiday_target: Target | None = None
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    options: list[MenuOptionIn] = []  # as many as the body limit allows

    @model_validator(mode="after")
    def _actions(self) -> MenuIn:
        _check_action("exhausted", self.exhausted_action, self.exhausted_target)
        _check_action("closed", self.closed_action, self.closed_target)
        _check_action("holiday", self.holiday_action, self.holiday_target)
        if self.schedule is not None and self.closed_action is None:
            raise ValueError("closed_action: a menu with a schedule says what happens when closed")
        return self


class MenuOut(MenuIn):
    name: str
    updated_at: datetime | None = None


class MenuSaved(MenuOut):
    warnings: list[str] = []


# ---------------------------------------------------------------- schedules


class HoursIn(Strict):
    weekday: int = Field(ge=0, le=6, description="0 = Monday .. 6 = Sunday")
    opens: time
    closes: time = Field(description="after opens; 00:00 = midnight at the end of the day")

    @model_validator(mode="after")
    def _interval(self) -> HoursIn:
        if self.opens >= self.closes and self.closes != time(0):
            raise ValueError("opens must be before closes")
        return self


ClosureDate = Annotated[date, Field(ge=date(1900, 1, 1), le=date(2999, 12, 31))]


class ClosureIn(Strict):
    name: Label
    starts_on: ClosureDate
    ends_on: ClosureDate

    @model_validator(mode="after")
    def _order(self) -> ClosureIn:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on must not be before starts_on")
        return self


class ScheduleIn(Strict):
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    description: Text = ""
    hours: list[HoursIn] = []  # as many as the body limit allows
    closures: list[ClosureIn] = []


class ScheduleOut(ScheduleIn):
    name: str
    updated_at: datetime | None = None


# ---------------------------------------------------------------- extensions


class ExtensionIn(Strict):
    kind: Literal["menu", "queue", "agent", "user"]
    target: Target = Field(description="menu, queue or agent name; for user, the endpoint")
    description: Text = ""

    @model_validator(mode="after")
    def _target(self) -> ExtensionIn:
        pattern = DESTINATION_RE if self.kind == "user" else SLUG_RE
        if not pattern.fullmatch(self.target):
            raise ValueError(f"target: not a valid {self.kind} target ({pattern.pattern})")
        return self


class ExtensionOut(ExtensionIn):
    number: str
    updated_at: datetime | None = None


# ---------------------------------------------------------------- queues


# A dial string for a callback's customer: one token, {number} where their digits go.
CallbackEndpoint = Annotated[str, StringConstraints(pattern=CALLBACK_ENDPOINT_RE.pattern)]


class QueueIn(Strict):
    description: Text = ""
    strategy: Literal[
        "ring_all", "longest_idle", "round_robin", "fewest_calls", "random", "skills"
    ] = "longest_idle"
    max_wait_seconds: int | None = Field(None, ge=1, le=86400)
    max_length: int | None = Field(None, ge=1, le=100000)
    announce_interval: int = Field(30, ge=0, le=3600)
    announce_position: bool = True
    announce_wait: bool = True
    moh_class: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "default"
    wrapup_seconds: int = Field(10, ge=0, le=3600)
    ring_timeout: int = Field(20, ge=5, le=300)
    max_no_answer: int = Field(3, ge=1, le=100)
    overflow_action: QueueAction = "hangup"
    overflow_target: Target | None = None
    join_when_empty: bool = True
    leave_when_empty: bool = False
    exit_key: Annotated[str, StringConstraints(pattern=r"^[0-9*#]$")] | None = None
    exit_action: QueueAction | None = None
    exit_target: Target | None = None
    service_level_seconds: int = Field(20, ge=1, le=3600)
    tier_widen_seconds: int = Field(30, ge=0, le=3600)
    required_skills: Skills = {}
    # Callback in queue (README "Callback in queue"); no callback_key: no callbacks.
    callback_key: Annotated[str, StringConstraints(pattern=r"^[0-9*#]$")] | None = None
    callback_announce: bool = True
    callback_max_attempts: int = Field(3, ge=1, le=10)
    callback_retry_seconds: int = Field(300, ge=1, le=86400)
    callback_ring_seconds: int = Field(30, ge=5, le=300)
    callback_freeswitch_endpoint: CallbackEndpoint = "sofia/gateway/pstn/{number}"
    callback_asterisk_endpoint: CallbackEndpoint = "PJSIP/{number}@pstn"
    recording: Literal["never", "always", "on_demand"] = "never"
    recording_announcement: PromptSpec | None = None  # played as a caller joins

    @model_validator(mode="after")
    def _routes(self) -> QueueIn:
        if 0 < self.announce_interval < 10:
            raise ValueError("announce_interval: 0 (never) or 10 to 3600 seconds")
        _check_route("overflow", self.overflow_action, self.overflow_target)
        if (self.exit_key is None) != (self.exit_action is None):
            raise ValueError("exit_action: set together with exit_key (both or neither)")
        _check_route("exit", self.exit_action, self.exit_target)
        if self.callback_key is not None and self.callback_key == self.exit_key:
            raise ValueError("callback_key: must differ from exit_key")
        if self.recording_announcement and is_template(self.recording_announcement):
            raise ValueError("recording_announcement: a plain prompt (no template)")
        return self


class QueueOut(QueueIn):
    name: str
    updated_at: datetime | None = None


class MemberIn(Strict):
    tier: int = Field(1, ge=1, le=9)
    penalty: int = Field(0, ge=0, le=100)


class MemberOut(MemberIn):
    queue: str
    agent: str
    updated_at: datetime | None = None


# ---------------------------------------------------------------- agents


class AgentIn(Strict):
    display_name: Label
    kind: Literal["browser", "sip"] = "browser"
    extension: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,16}$")] | None = None
    role: Literal["agent", "supervisor", "admin"] = "agent"
    skills: Skills = {}
    enabled: bool = True
    password: Annotated[str, StringConstraints(min_length=8, max_length=128)] | None = Field(
        None, description="Set a new password (8-128 characters); omit to keep the current one"
    )


class AgentOut(Strict):
    username: str
    display_name: str
    kind: str
    extension: str | None
    role: str
    skills: dict[str, int]
    enabled: bool
    has_password: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None


# ---------------------------------------------------------------- auth and keys


class LoginIn(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class SessionOut(BaseModel):
    username: str
    role: str
    token: str
    expires_in: int


class Me(BaseModel):
    name: str
    role: str
    via: str


class ApiKeyIn(Strict):
    name: Slug
    role: Literal["supervisor", "admin"] = "admin"


class ApiKeyOut(BaseModel):
    name: str
    role: str
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="Shown once: store it now")


# ---------------------------------------------------------------- operations


class CdrOut(BaseModel):
    call_id: str
    engine: str
    node: str
    caller: str
    called: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    menu_path: list[str]
    queue: str | None
    wait_seconds: float | None
    agent: str | None
    disposition: str | None
    hangup_cause: str | None
    extra: dict[str, Any]


class CdrPageOut(BaseModel):
    items: list[CdrOut]
    total: int
    limit: int
    offset: int
