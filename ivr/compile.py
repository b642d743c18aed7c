"""Compile validated definitions into an immutable, versioned :class:`MenuSet`.

A ``MenuSet`` is what calls run on: workers fetch it from Redis as JSON
(:meth:`MenuSet.to_json` / :meth:`MenuSet.from_json`), and a call keeps the object it
started with even when a newer version is published. ``digest`` identifies the content
(independent of version and time), so a publisher can skip republishing identical sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from ivr.model import (
    Action,
    ClosureDef,
    Extension,
    ExtensionKind,
    HoursDef,
    Mailbox,
    MailboxDef,
    Menu,
    MenuDef,
    MenuSource,
    Option,
    parse_action,
    parse_prompt,
    prompt_spec,
)
from ivr.schedules import Schedule
from ivr.validate import MenuSetInvalid, errors, validate

if TYPE_CHECKING:
    from ivr.machine import IvrCall

FORMAT = 1  # bump when the JSON layout changes incompatibly


@dataclass(frozen=True, slots=True)
class MenuSet:
    version: int
    menus: Mapping[str, Menu]
    schedules: Mapping[str, Schedule]
    extensions: Mapping[str, Extension]
    queues: frozenset[str]
    compiled_at: str = ""  # ISO 8601 UTC
    warnings: tuple[str, ...] = ()
    digest: str = field(default="", compare=False)
    mailboxes: Mapping[str, Mailbox] = field(default_factory=lambda: MappingProxyType({}))

    def flow_for(
        self, number: str, *, clock: Callable[[], datetime] | None = None
    ) -> IvrCall | None:
        """A new call flow for a call to extension ``number``, or None if it is not defined."""
        from ivr.machine import IvrCall

        ext = self.extensions.get(number.strip())
        if ext is None:
            return None
        return IvrCall.for_extension(self, ext, clock=clock)

    def with_version(self, version: int, compiled_at: str | None = None) -> MenuSet:
        return MenuSet(
            version,
            self.menus,
            self.schedules,
            self.extensions,
            self.queues,
            compiled_at if compiled_at is not None else self.compiled_at,
            self.warnings,
            self.digest,
            self.mailboxes,
        )

    # ---------------------------------------------------------------- JSON
    def content(self) -> dict[str, Any]:
        """Everything but version and time, in a canonical order."""
        return {
            "menus": [_menu_to_dict(m) for _, m in sorted(self.menus.items())],
            "schedules": [_schedule_to_dict(s) for _, s in sorted(self.schedules.items())],
            "extensions": [
                [e.number, e.kind, e.target] for _, e in sorted(self.extensions.items())
            ],
            "queues": sorted(self.queues),
            "mailboxes": [_mailbox_to_dict(b) for _, b in sorted(self.mailboxes.items())],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "compiled_at": self.compiled_at,
            "digest": self.digest,
            "warnings": list(self.warnings),
            **self.content(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> MenuSet:
        """Load a published menu set; raises ``ValueError`` on a malformed document."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unsupported menu set format {doc.get('format')!r}")
            menus = {m["name"]: _menu_from_dict(m) for m in doc["menus"]}
            schedules = {s["name"]: _schedule_from_dict(s) for s in doc["schedules"]}
            extensions = {
                n: Extension(n, cast(ExtensionKind, k), t) for n, k, t in doc["extensions"]
            }
            return cls(
                int(doc["version"]),
                MappingProxyType(menus),
                MappingProxyType(schedules),
                MappingProxyType(extensions),
                frozenset(doc["queues"]),
                str(doc.get("compiled_at", "")),
                tuple(doc.get("warnings", ())),
                str(doc.get("digest", "")),
                MappingProxyType(
                    {b["name"]: _mailbox_from_dict(b) for b in doc.get("mailboxes", ())}
                ),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed menu set document: {exc}") from exc


def _action_to_list(a: Action) -> list[str]:
    return [a.kind, a.target]


def _menu_to_dict(m: Menu) -> dict[str, Any]:
    return {
        "name": m.name,
        "greeting": [prompt_spec(p) for p in m.greeting],
        "invalid_prompt": [prompt_spec(p) for p in m.invalid_prompt],
        "timeout_prompt": [prompt_spec(p) for p in m.timeout_prompt],
        "first_digit_timeout": m.first_digit_timeout,
        "inter_digit_timeout": m.inter_digit_timeout,
        "max_digits": m.max_digits,
        "terminator": m.terminator,
        "max_retries": m.max_retries,
        "exhausted": _action_to_list(m.exhausted),
        "schedule": m.schedule,
        "closed": _action_to_list(m.closed) if m.closed else None,
        "holiday": _action_to_list(m.holiday) if m.holiday else None,
        "language": m.language,
        "options": [
            [o.digits, *_action_to_list(o.action), [prompt_spec(p) for p in o.prompts]]
            for o in m.options
        ],
    }


def _menu_from_dict(d: dict[str, Any]) -> Menu:
    def prompts(specs: list[str]) -> tuple[Any, ...]:
        return tuple(parse_prompt(s) for s in specs)

    def action(v: list[str] | None) -> Action | None:
        return parse_action(v[0], v[1]) if v else None

    return Menu(
        name=d["name"],
        greeting=prompts(d["greeting"]),
        invalid_prompt=prompts(d["invalid_prompt"]),
        timeout_prompt=prompts(d["timeout_prompt"]),
        first_digit_timeout=float(d["first_digit_timeout"]),
        inter_digit_timeout=float(d["inter_digit_timeout"]),
        max_digits=int(d["max_digits"]),
        terminator=d["terminator"],
        max_retries=int(d["max_retries"]),
        exhausted=parse_action(*d["exhausted"]),
        schedule=d["schedule"],
        closed=action(d["closed"]),
        holiday=action(d["holiday"]),
        language=d["language"],
        options=tuple(
            Option(digits, parse_action(kind, target), prompts(specs))
            for digits, kind, target, specs in d["options"]
        ),
    )


def _mailbox_to_dict(b: Mailbox) -> dict[str, Any]:
    return {"name": b.name, "greeting": [prompt_spec(p) for p in b.greeting],
            "max_seconds": b.max_seconds, "review": b.review}


def _mailbox_from_dict(d: dict[str, Any]) -> Mailbox:
    return Mailbox(d["name"], tuple(parse_prompt(s) for s in d["greeting"]),
                   int(d["max_seconds"]), bool(d["review"]))


def _build_mailbox(b: MailboxDef) -> Mailbox:
    return Mailbox(b.name, tuple(parse_prompt(s) for s in b.greeting), int(b.max_seconds),
                   bool(b.review))


def _schedule_to_dict(s: Schedule) -> dict[str, Any]:
    return {
        "name": s.name,
        "timezone": s.timezone,
        "hours": [[h.weekday, h.opens.isoformat(), h.closes.isoformat()] for h in s.hours],
        "closures": [[c.name, c.starts_on.isoformat(), c.ends_on.isoformat()] for c in s.closures],
    }


def _schedule_from_dict(d: dict[str, Any]) -> Schedule:
    return Schedule(
        d["name"],
        d["timezone"],
        tuple(
            HoursDef(int(w), time.fromisoformat(o), time.fromisoformat(c)) for w, o, c in d["hours"]
        ),
        tuple(
            ClosureDef(n, date.fromisoformat(a), date.fromisoformat(b)) for n, a, b in d["closures"]
        ),
    )


def _build_menu(m: MenuDef) -> Menu:
    return Menu(
        name=m.name,
        greeting=tuple(parse_prompt(s) for s in m.greeting),
        invalid_prompt=tuple(parse_prompt(s) for s in m.invalid_prompt),
        timeout_prompt=tuple(parse_prompt(s) for s in m.timeout_prompt),
        first_digit_timeout=float(m.first_digit_timeout),
        inter_digit_timeout=float(m.inter_digit_timeout),
        max_digits=int(m.max_digits),
        terminator=m.terminator,
        max_retries=int(m.max_retries),
        exhausted=parse_action(m.exhausted_action, m.exhausted_target),
        schedule=m.schedule,
        closed=(
            parse_action(m.closed_action or "hangup", m.closed_target)
            if m.schedule is not None
            else None
        ),
        holiday=(
            parse_action(m.holiday_action, m.holiday_target)
            if m.schedule is not None and m.holiday_action
            else None
        ),
        language=m.language,
        options=tuple(
            Option(
                o.digits, parse_action(o.action, o.target), tuple(parse_prompt(s) for s in o.prompt)
            )
            for o in sorted(m.options, key=lambda o: (o.position, o.digits))
        ),
    )


def compile_menuset(
    source: MenuSource, version: int = 0, *, compiled_at: str | None = None
) -> MenuSet:
    """Validate ``source`` and build its :class:`MenuSet`.

    Raises :class:`ivr.validate.MenuSetInvalid` (with every issue) if validation finds errors.
    """
    issues = validate(source)
    if errors(issues):
        raise MenuSetInvalid(issues)
    menus = {m.name: _build_menu(m) for m in source.menus}
    schedules = {s.name: Schedule.from_def(s) for s in source.schedules}
    extensions = {
        e.number.strip(): Extension(e.number.strip(), cast(ExtensionKind, e.kind), e.target)
        for e in source.extensions
    }
    ms = MenuSet(
        version,
        MappingProxyType(menus),
        MappingProxyType(schedules),
        MappingProxyType(extensions),
        frozenset(source.queues),
        compiled_at if compiled_at is not None else _utcnow(),
        tuple(str(i) for i in issues),
        mailboxes=MappingProxyType({b.name: _build_mailbox(b) for b in source.mailboxes}),
    )
    canonical = json.dumps(ms.content(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return MenuSet(
        ms.version,
        ms.menus,
        ms.schedules,
        ms.extensions,
        ms.queues,
        ms.compiled_at,
        ms.warnings,
        digest,
        ms.mailboxes,
    )


def _utcnow() -> str:
    from datetime import UTC

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
