"""Read everything a menu set is compiled from, in one consistent snapshot."""

from __future__ import annotations

import asyncpg

from appserver.store.db import Executor
from appserver.store.extensions import list_extensions
from appserver.store.menus import Menu, list_menus
from appserver.store.schedules import list_schedules
from ivr.model import (
    ClosureDef,
    ExtensionDef,
    HoursDef,
    MailboxDef,
    MenuDef,
    MenuSource,
    OptionDef,
    ScheduleDef,
)

# Tables whose changes can change the compiled menu set (NOTIFY payload "table").
RELEVANT_TABLES = frozenset(
    {
        "ivr_menus",
        "ivr_menu_options",
        "schedules",
        "schedule_hours",
        "schedule_closures",
        "extensions",
        "queues",
        "agents",  # an agent's username is the target of its extension
        "voicemail_boxes",
    }
)


def menu_def(m: Menu) -> MenuDef:
    return MenuDef(
        name=m.name,
        greeting=tuple(m.greeting),
        invalid_prompt=tuple(m.invalid_prompt or ()),
        timeout_prompt=tuple(m.timeout_prompt or ()),
        first_digit_timeout=m.first_digit_timeout,
        inter_digit_timeout=m.inter_digit_timeout,
        max_digits=m.max_digits,
        terminator=m.terminator,
        max_retries=m.max_retries,
        exhausted_action=m.exhausted_action,
        exhausted_target=m.exhausted_target or "",
        schedule=m.schedule,
        closed_action=m.closed_action,
        closed_target=m.closed_target or "",
        holiday_action=m.holiday_action,
        holiday_target=m.holiday_target or "",
        language=m.language,
        options=tuple(
            OptionDef(o.digits, o.action, o.target or "", tuple(o.prompt or ()), o.position)
            for o in m.options
        ),
    )


async def _read(conn: asyncpg.Connection) -> MenuSource:
    menus = await list_menus(conn)
    extensions = await list_extensions(conn)
    queues = await conn.fetch("SELECT name FROM queues")
    mailboxes = await conn.fetch(
        "SELECT name, greeting, max_seconds, review FROM voicemail_boxes ORDER BY name")
    schedules = [
        ScheduleDef(
            s.name,
            s.timezone,
            tuple(HoursDef(h.weekday, h.opens, h.closes) for h in s.hours),
            tuple(ClosureDef(c.name, c.starts_on, c.ends_on) for c in s.closures),
        )
        for s in await list_schedules(conn)
    ]
    return MenuSource(
        menus=tuple(menu_def(m) for m in menus),
        schedules=tuple(schedules),
        extensions=tuple(ExtensionDef(e.number, e.kind, e.target) for e in extensions),
        queues=frozenset(r["name"] for r in queues),
        mailboxes=tuple(MailboxDef(r["name"], tuple(r["greeting"]), r["max_seconds"], r["review"])
                        for r in mailboxes),
    )


async def load_source(db: Executor) -> MenuSource:
    """The menus, schedules, extensions, queue names and mailboxes, read in one snapshot."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await load_source(conn)
    if db.is_in_transaction():
        return await _read(db)
    async with db.transaction(isolation="repeatable_read", readonly=True):
        return await _read(db)
