"""Request and response bodies of the REST API, with a limit on every field.

These mirror the repositories' dataclasses (``appserver/store``); the database checks the
same rules again, so a row written by hand in SQL obeys them too.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9*#]{1,20}$")]
Number = Annotated[str, StringConstraints(pattern=r"^[0-9*#+]{1,32}$")]
Text = Annotated[str, StringConstraints(max_length=500)]
Target = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# "kind:value", e.g. "file:demo/welcome", "tts:Hello {{ caller }}"
PromptSpec = Annotated[
    str, StringConstraints(pattern=r"^(file|tts|digits|number|silence):.*\S", max_length=1000)
]
Prompts = Annotated[list[PromptSpec], Field(max_length=20)]
ActionKind = Literal[
    "submenu", "back", "repeat", "main", "enqueue", "dial", "transfer", "play", "set", "hangup"
]
QueueAction = Literal["hangup", "queue", "menu", "transfer", "voicemail"]
Skills = Annotated[dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")],
                        Annotated[int, Field(ge=1, le=10)]], Field(max_length=50)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------- menus


class MenuOptionIn(Strict):
    digits: Digits
    action: ActionKind
    target: Target | None = None
    prompt: Prompts | None = None
    position: int = Field(0, ge=0, le=1000)


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
    options: Annotated[list[MenuOptionIn], Field(max_length=100)] = []


class MenuOut(MenuIn):
    name: str
    updated_at: datetime | None = None


class MenuSaved(MenuOut):
    warnings: list[str] = []


# ---------------------------------------------------------------- schedules


class HoursIn(Strict):
    weekday: int = Field(ge=0, le=6, description="0 = Monday .. 6 = Sunday")
    opens: time
    closes: time


class ClosureIn(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"\S")]
    starts_on: date
    ends_on: date


class ScheduleIn(Strict):
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    description: Text = ""
    hours: Annotated[list[HoursIn], Field(max_length=100)] = []
    closures: Annotated[list[ClosureIn], Field(max_length=500)] = []


class ScheduleOut(ScheduleIn):
    name: str
    updated_at: datetime | None = None


# ---------------------------------------------------------------- extensions


class ExtensionIn(Strict):
    kind: Literal["menu", "queue", "agent", "user"]
    target: Target
    description: Text = ""


class ExtensionOut(ExtensionIn):
    number: str
    updated_at: datetime | None = None


# ---------------------------------------------------------------- queues


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
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"\S")]
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
