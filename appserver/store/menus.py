"""IVR menus with their options. The schedule is referenced by name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from appserver.store.db import Executor, NotFoundError, from_jsonb, transaction


@dataclass(frozen=True, slots=True)
class MenuOption:
    digits: str
    action: str
    target: str | None = None
    prompt: tuple[str, ...] | None = None
    position: int = 0
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    description: str = ""
    greeting: tuple[str, ...] = ()
    invalid_prompt: tuple[str, ...] | None = None
    timeout_prompt: tuple[str, ...] | None = None
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 2.0
    max_digits: int = 1
    terminator: str = "#"
    max_retries: int = 3
    exhausted_action: str = "hangup"
    exhausted_target: str | None = None
    schedule: str | None = None  # schedule name
    closed_action: str | None = None
    closed_target: str | None = None
    holiday_action: str | None = None
    holiday_target: str | None = None
    language: str = "en"
    options: tuple[MenuOption, ...] = ()
    id: int | None = None
    updated_at: datetime | None = None


_SELECT = """
SELECT m.*, s.name AS schedule_name,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'id', o.id, 'digits', o.digits, 'action', o.action, 'target', o.target,
                        'prompt', o.prompt, 'position', o.position)
                        ORDER BY o.position, o.digits)
                   FROM ivr_menu_options o WHERE o.menu_id = m.id), '[]') AS options
  FROM ivr_menus m LEFT JOIN schedules s ON s.id = m.schedule_id
"""


def _tuple(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _menu(row: asyncpg.Record) -> Menu:
    options = from_jsonb(row["options"])
    return Menu(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        greeting=tuple(row["greeting"]),
        invalid_prompt=_tuple(row["invalid_prompt"]),
        timeout_prompt=_tuple(row["timeout_prompt"]),
        first_digit_timeout=round(float(row["first_digit_timeout"]), 3),
        inter_digit_timeout=round(float(row["inter_digit_timeout"]), 3),
        max_digits=row["max_digits"],
        terminator=row["terminator"],
        max_retries=row["max_retries"],
        exhausted_action=row["exhausted_action"],
        exhausted_target=row["exhausted_target"],
        schedule=row["schedule_name"],
        closed_action=row["closed_action"],
        closed_target=row["closed_target"],
        holiday_action=row["holiday_action"],
        holiday_target=row["holiday_target"],
        language=row["language"],
        updated_at=row["updated_at"],
        options=tuple(
            MenuOption(
                id=o["id"],
                digits=o["digits"],
                action=o["action"],
                target=o["target"],
                prompt=_tuple(o["prompt"]),
                position=o["position"],
            )
            for o in options
        ),
    )


async def list_menus(db: Executor) -> list[Menu]:
    return [_menu(r) for r in await db.fetch(_SELECT + " ORDER BY m.name")]


async def get_menu(db: Executor, name: str) -> Menu | None:
    row = await db.fetchrow(_SELECT + " WHERE m.name = $1", name)
    return _menu(row) if row else None


_UPSERT = """
INSERT INTO ivr_menus (name, description, greeting, invalid_prompt, timeout_prompt,
                       first_digit_timeout, inter_digit_timeout, max_digits, terminator,
                       max_retries, exhausted_action, exhausted_target, schedule_id,
                       closed_action, closed_target, holiday_action, holiday_target, language)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (name) DO UPDATE SET
    description = EXCLUDED.description, greeting = EXCLUDED.greeting,
    invalid_prompt = EXCLUDED.invalid_prompt, timeout_prompt = EXCLUDED.timeout_prompt,
    first_digit_timeout = EXCLUDED.first_digit_timeout,
    inter_digit_timeout = EXCLUDED.inter_digit_timeout, max_digits = EXCLUDED.max_digits,
    terminator = EXCLUDED.terminator, max_retries = EXCLUDED.max_retries,
    exhausted_action = EXCLUDED.exhausted_action, exhausted_target = EXCLUDED.exhausted_target,
    schedule_id = EXCLUDED.schedule_id, closed_action = EXCLUDED.closed_action,
    closed_target = EXCLUDED.closed_target, holiday_action = EXCLUDED.holiday_action,
    holiday_target = EXCLUDED.holiday_target, language = EXCLUDED.language
RETURNING id
"""


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)


async def save_menu(db: Executor, menu: Menu) -> Menu:
    """Create or replace (by name) a menu and all its options, in one transaction."""
    async with transaction(db) as conn:
        schedule_id = None
        if menu.schedule is not None:
            schedule_id = await conn.fetchval(
                "SELECT id FROM schedules WHERE name = $1", menu.schedule
            )
            if schedule_id is None:
                raise NotFoundError(f"menu {menu.name!r}: no schedule named {menu.schedule!r}")
        menu_id = await conn.fetchval(
            _UPSERT,
            menu.name,
            menu.description,
            list(menu.greeting),
            _list(menu.invalid_prompt),
            _list(menu.timeout_prompt),
            menu.first_digit_timeout,
            menu.inter_digit_timeout,
            menu.max_digits,
            menu.terminator,
            menu.max_retries,
            menu.exhausted_action,
            menu.exhausted_target,
            schedule_id,
            menu.closed_action,
            menu.closed_target,
            menu.holiday_action,
            menu.holiday_target,
            menu.language,
        )
        await conn.execute("DELETE FROM ivr_menu_options WHERE menu_id = $1", menu_id)
        if menu.options:
            await conn.executemany(
                "INSERT INTO ivr_menu_options (menu_id, digits, action, target, prompt, position)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (menu_id, o.digits, o.action, o.target, _list(o.prompt), o.position)
                    for o in menu.options
                ],
            )
        row = await conn.fetchrow(_SELECT + " WHERE m.id = $1", menu_id)
    return _menu(row)


async def delete_menu(db: Executor, name: str) -> bool:
    """Delete a menu and its options; fails (foreign key) while an extension points at it."""
    return await db.fetchval("DELETE FROM ivr_menus WHERE name = $1 RETURNING true", name) is True
