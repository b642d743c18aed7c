"""Validation of a whole menu set, with messages that name the menu and option at fault.

Errors block publication (the last valid version keeps serving); warnings are reported but
do not block. Rules worth knowing:

* Option digits are 1-20 of ``0-9 * #``, unique within a menu, at most ``max_digits`` long
  and never contain the menu's terminator (pressing it ends the entry).
* Options that are prefixes of each other (``1`` and ``12``) are legal: ``12`` is taken as
  soon as it is complete, ``1`` when the caller presses the terminator or stops typing for
  ``inter_digit_timeout`` seconds. An option nothing else extends is taken at once.
* Menu-level actions (exhausted, closed, holiday) may be ``submenu``, ``back``, ``main``,
  ``enqueue``, ``dial``, ``transfer``, ``voicemail`` or ``hangup`` (``play``, ``set`` and
  ``repeat`` need an option or would loop).
* A set of menus that hand the call to one another when the caller presses nothing (via
  exhausted, closed or holiday actions) forms a loop with no exit: an error.
* A menu no extension can reach is a warning (it may be wired up in a later edit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from ivr.calls import Prompt
from ivr.model import (
    ACTION_KINDS,
    DESTINATION_RE,
    DIGITS_RE,
    EXTENSION_KINDS,
    EXTENSION_RE,
    MAILBOX_MAX_SECONDS,
    QUEUE_TARGET_RE,
    MenuDef,
    MenuSource,
    OptionDef,
    PromptSpecError,
    parse_prompt,
    set_target_problem,
)
from ivr.prompts import MAX_WORK, check_template, prompts_work
from ivr.schedules import load_zone

MENU_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
MENU_LEVEL_ACTIONS = frozenset(
    {"submenu", "back", "main", "enqueue", "dial", "transfer", "hangup", "voicemail"}
)
FIRST_DIGIT_TIMEOUT = (0.5, 60.0)
INTER_DIGIT_TIMEOUT = (0.2, 30.0)
MAX_DIGITS = (1, 20)
MAX_RETRIES = (0, 10)
TERMINATORS = ("#", "*", "")


@dataclass(frozen=True, slots=True)
class Issue:
    severity: Literal["error", "warning"]
    message: str
    menu: str | None = None
    option: str | None = None
    field: str | None = None  # the menu or option field at fault, e.g. "target", "greeting"

    @property
    def where(self) -> str:
        if self.menu is None:
            return ""
        return f"menu {self.menu!r}" + (f", option {self.option!r}" if self.option else "")

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {
            "severity": self.severity,
            "menu": self.menu,
            "option": self.option,
            "field": self.field,
            "message": self.message,
            "text": str(self),
        }


class MenuSetInvalid(ValueError):
    """Raised by compilation when validation found errors; ``issues`` lists them all."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        errors = [str(i) for i in issues if i.severity == "error"]
        super().__init__(
            f"{len(errors)} error(s) in the menu set: "
            + "; ".join(errors[:10])
            + (" ..." if len(errors) > 10 else "")
        )


def errors(issues: Iterable[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


class _Checker:
    def __init__(self, source: MenuSource) -> None:
        self.src = source
        self.issues: list[Issue] = []
        self.menus = {m.name: m for m in source.menus}
        self.schedules = {s.name: s for s in source.schedules}
        self.extensions = {e.number.strip(): e for e in source.extensions}
        self.mailboxes = {b.name: b for b in source.mailboxes}
        self.set_variables = {
            o.target.partition("=")[0].strip(): "sample"
            for m in source.menus
            for o in m.options
            if o.action == "set"
        }

    def error(
        self, message: str, menu: str | None = None, option: str | None = None,
        field: str | None = None,
    ) -> None:
        self.issues.append(Issue("error", message, menu, option, field))

    def warn(self, message: str, menu: str | None = None, option: str | None = None) -> None:
        self.issues.append(Issue("warning", message, menu, option))

    # ---------------------------------------------------------------- prompts
    def prompts(
        self, specs: Iterable[str], what: str, menu: str | None, option: str | None = None
    ) -> list[Prompt]:
        out = []
        for spec in specs:
            try:
                prompt = parse_prompt(spec)
            except PromptSpecError as exc:
                self.error(f"{what}: {exc}", menu, option, what)
                continue
            problem = check_template(prompt, self.set_variables)
            if problem:
                self.error(f"{what} {spec!r} does not render: {problem}", menu, option, what)
            out.append(prompt)
        if (work := prompts_work(out)) > MAX_WORK:  # they are rendered together
            self.error(
                f"{what}: its templates do too much work together ({work} steps, at most "
                f"{MAX_WORK}); simplify them or move work into a call-flow app",
                menu,
                option,
                what,
            )
        return out

    # ---------------------------------------------------------------- actions
    def action(
        self, kind: str, target: str, what: str, menu: MenuDef, option: OptionDef | None = None
    ) -> None:
        opt = option.digits if option else None
        prefix = what.removesuffix("action").strip().replace(" ", "_")  # "exhausted", ""
        target_field = f"{prefix}_target" if prefix else "target"

        def fail(message: str, field: str = target_field) -> None:
            self.error(message, menu.name, opt, field)

        target = (target or "").strip()
        allowed = ACTION_KINDS if option else MENU_LEVEL_ACTIONS
        if kind not in allowed:
            fail(f"{what} {kind!r} is not one of {', '.join(sorted(allowed))}",
                 f"{prefix}_action" if prefix else "action")
            return
        if kind == "submenu":
            if not target:
                fail(f"{what} submenu needs the target menu's name")
            elif target not in self.menus:
                fail(f"{what} submenu target {target!r} does not exist")
            elif target == menu.name:
                fail(f"{what} submenu targets its own menu; use 'repeat' instead")
        elif kind in ("back", "repeat", "main", "hangup"):
            if target:
                fail(f"{what} {kind} takes no target (got {target!r})")
        elif kind == "enqueue":
            m = QUEUE_TARGET_RE.match(target)
            if not m:
                fail(f"{what} enqueue target {target!r} must be queue or queue:priority")
            elif m["queue"] not in self.src.queues:
                known = ", ".join(sorted(self.src.queues)) or "none defined"
                fail(f"{what} enqueue target queue {m['queue']!r} does not exist (known: {known})")
        elif kind == "dial":
            if target not in self.extensions:
                fail(f"{what} dial target {target!r} is not a defined extension")
        elif kind == "transfer":
            if not DESTINATION_RE.match(target):
                fail(
                    f"{what} transfer destination {target!r} must be a number or address "
                    "(letters, digits and + * # @ . _ : / -)"
                )
        elif kind == "play":
            if target:
                fail(
                    f"{what} play takes its prompts from the option's prompt, not the "
                    f"target (got {target!r})"
                )
            if option is not None and not option.prompt:
                fail(f"{what} play needs the option's prompt to be set", "prompt")
        elif kind == "set":
            problem = set_target_problem(target)
            if problem:
                fail(f"{what} set target {target!r} {problem}")
        elif kind == "voicemail" and target not in self.mailboxes:
            known = ", ".join(sorted(self.mailboxes)) or "none defined"
            fail(f"{what} voicemail target mailbox {target!r} does not exist (known: {known})")

    def mailbox_defs(self) -> None:
        for box in self.src.mailboxes:
            where = f"mailbox {box.name!r}"
            self.prompts(box.greeting, f"{where} greeting", None)
            self.number(box.max_seconds, MAILBOX_MAX_SECONDS, f"{where} max_seconds", None,
                        "s", whole=True)

    # ---------------------------------------------------------------- menus
    def menu(self, m: MenuDef) -> None:
        n = m.name
        self.prompts(m.greeting, "greeting", n)
        self.prompts(m.invalid_prompt, "invalid_prompt", n)
        self.prompts(m.timeout_prompt, "timeout_prompt", n)
        self.number(m.first_digit_timeout, FIRST_DIGIT_TIMEOUT, "first_digit_timeout", n, "s")
        self.number(m.inter_digit_timeout, INTER_DIGIT_TIMEOUT, "inter_digit_timeout", n, "s")
        self.number(m.max_digits, MAX_DIGITS, "max_digits", n, "", whole=True)
        self.number(m.max_retries, MAX_RETRIES, "max_retries", n, "", whole=True)
        if m.terminator not in TERMINATORS:
            self.error(
                f"terminator {m.terminator!r} must be '#', '*' or empty", n, field="terminator"
            )
        if not LANGUAGE_RE.match(m.language or ""):
            self.error(
                f"language {m.language!r} must be a code such as en or fr-CA", n, field="language"
            )
        self.action(m.exhausted_action, m.exhausted_target, "exhausted action", m)
        if m.schedule is not None:
            if m.schedule not in self.schedules:
                self.error(f"schedule {m.schedule!r} does not exist", n, field="schedule")
            self.action(m.closed_action or "hangup", m.closed_target, "closed action", m)
            if m.holiday_action:
                self.action(m.holiday_action, m.holiday_target, "holiday action", m)
        elif m.closed_action or m.holiday_action:
            self.warn("closed/holiday action set but no schedule: it never runs", n)
        if not m.options and not m.greeting:
            self.warn("has neither a greeting nor options", n)
        seen: dict[str, OptionDef] = {}
        for o in m.options:
            d = o.digits
            if not DIGITS_RE.match(d or ""):
                self.error("digits must be 1 to 20 of 0-9, * and #", n, d, "digits")
                continue
            if d in seen:
                self.error("is defined twice", n, d, "digits")
                continue
            seen[d] = o
            if m.terminator and m.terminator in d:
                self.error(
                    f"contains the terminator {m.terminator!r}, which ends the entry; choose "
                    "other digits or set the menu's terminator to another key or ''",
                    n,
                    d,
                    "digits",
                )
            if isinstance(m.max_digits, int) and len(d) > m.max_digits:
                self.error(
                    f"is {len(d)} digits long but the menu's max_digits is {m.max_digits}",
                    n,
                    d,
                    "digits",
                )
            self.prompts(o.prompt, "prompt", n, d)
            self.action(o.action, o.target, "action", m, o)

    def number(
        self,
        value: object,
        bounds: tuple[float, float],
        name: str,
        menu: str | None,
        unit: str,
        whole: bool = False,
    ) -> None:
        lo, hi = bounds
        ok = False
        if isinstance(value, int | float) and not isinstance(value, bool):
            v = float(value)
            ok = math.isfinite(v) and lo <= v <= hi and (not whole or v == int(v))
        if not ok:
            kind = "a whole number" if whole else "a number"
            self.error(
                f"{name} {value!r} must be {kind} from {lo:g} to {hi:g}{unit}", menu, field=name
            )

    # ---------------------------------------------------------------- schedules, extensions
    def schedule_defs(self) -> None:
        seen: set[str] = set()
        for s in self.src.schedules:
            where = f"schedule {s.name!r}"
            if s.name in seen:
                self.error(f"{where} is defined twice")
            seen.add(s.name)
            try:
                load_zone(s.timezone)
            except ValueError as exc:
                self.error(f"{where}: {exc}")
            for h in s.hours:
                if not 0 <= h.weekday <= 6:
                    self.error(f"{where}: weekday {h.weekday} must be 0 (Monday) to 6 (Sunday)")
                if h.opens == h.closes and h.opens.hour + h.opens.minute != 0:
                    self.error(f"{where}: interval {h.opens}-{h.closes} is empty")
            for c in s.closures:
                if c.ends_on < c.starts_on:
                    self.error(
                        f"{where}: closure {c.name!r} ends ({c.ends_on}) before it starts "
                        f"({c.starts_on})"
                    )

    def extension_defs(self) -> None:
        seen: dict[str, str] = {}
        for e in self.src.extensions:
            num = e.number.strip()
            where = f"extension {e.number!r}"
            if not EXTENSION_RE.match(num):
                self.error(f"{where}: number must be 1 to 32 of 0-9, *, # and +")
            if num in seen:
                self.error(f"{where} collides with another extension ({seen[num]} and {e.kind})")
            seen[num] = e.kind
            if e.kind not in EXTENSION_KINDS:
                self.error(f"{where}: kind {e.kind!r} must be menu, queue, agent or user")
            elif e.kind == "menu" and e.target not in self.menus:
                self.error(f"{where}: menu {e.target!r} does not exist")
            elif e.kind == "queue" and e.target not in self.src.queues:
                self.error(f"{where}: queue {e.target!r} does not exist")
            elif e.kind in ("agent", "user") and not DESTINATION_RE.fullmatch(e.target or ""):
                self.error(f"{where}: {e.kind} target {e.target!r} is not a valid dial target")

    # ---------------------------------------------------------------- graph checks
    def _menu_target(self, kind: str, target: str) -> str | None:
        """The menu an action leads to, if it leads to one."""
        target = (target or "").strip()
        if kind == "submenu":
            return target if target in self.menus else None
        if kind == "dial":
            ext = self.extensions.get(target)
            if ext is not None and ext.kind == "menu" and ext.target in self.menus:
                return ext.target
        return None

    def _idle_edges(self, m: MenuDef) -> Iterator[tuple[str, str]]:
        """Where a menu sends a caller who presses nothing: (how, menu)."""
        pairs = [("exhausted", m.exhausted_action, m.exhausted_target)]
        if m.schedule is not None:
            pairs.append(("closed", m.closed_action or "hangup", m.closed_target))
            if m.holiday_action:
                pairs.append(("holiday", m.holiday_action, m.holiday_target))
        for how, kind, target in pairs:
            dest = self._menu_target(kind, target)
            if dest is not None:
                yield how, dest

    def loops(self) -> None:
        edges = {n: list(self._idle_edges(m)) for n, m in self.menus.items()}
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        reported: set[frozenset[str]] = set()

        def visit(node: str, path: list[tuple[str, str]]) -> None:
            state[node] = 1
            for how, dest in edges[node]:
                if state.get(dest) == 1:
                    names = [p[0] for p in path] + [node]
                    cycle = names[names.index(dest) :]
                    hops = [*path, (node, how)]
                    hops = hops[len(hops) - len(cycle) :]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        desc = " -> ".join(f"{a} ({h})" for a, h in hops) + f" -> {dest}"
                        self.error(
                            "loops forever when the caller presses nothing, with no exit: "
                            f"{desc}; give one of these menus an exhausted/closed action that "
                            "ends (hangup, enqueue, dial, transfer, back or main)",
                            dest,
                        )
                elif state.get(dest) is None:
                    visit(dest, [*path, (node, how)])
            state[node] = 2

        for name in self.menus:
            if name not in state:
                visit(name, [])

    def reachability(self) -> None:
        todo = [
            e.target for e in self.src.extensions if e.kind == "menu" and e.target in self.menus
        ]
        seen = set(todo)
        while todo:
            m = self.menus[todo.pop()]
            kinds = [(o.action, o.target) for o in m.options]
            kinds.append((m.exhausted_action, m.exhausted_target))
            kinds.append((m.closed_action or "", m.closed_target))
            kinds.append((m.holiday_action or "", m.holiday_target))
            for kind, target in kinds:
                dest = self._menu_target(kind, target)
                if dest is not None and dest not in seen:
                    seen.add(dest)
                    todo.append(dest)
        for name in self.menus:
            if name not in seen:
                self.warn("is not reachable from any extension", name)

    def run(self) -> list[Issue]:
        names: set[str] = set()
        for m in self.src.menus:
            if not MENU_NAME_RE.match(m.name or ""):
                self.error(f"menu name {m.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
            if m.name in names:
                self.error("is defined twice", m.name)
            names.add(m.name)
            self.menu(m)
        self.schedule_defs()
        self.mailbox_defs()
        self.extension_defs()
        self.loops()
        self.reachability()
        return self.issues


def validate(source: MenuSource) -> list[Issue]:
    """Every problem found in ``source`` (errors first, then warnings)."""
    issues = _Checker(source).run()
    return errors(issues) + [i for i in issues if i.severity == "warning"]
