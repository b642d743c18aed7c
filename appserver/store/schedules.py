"""Schedules: business hours per weekday, holidays (closures) and a time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

import asyncpg

from appserver.store.db import Executor, from_jsonb, transaction


@dataclass(frozen=True, slots=True)
class Hours:
    weekday: int  # 0 = Monday .. 6 = Sunday
    opens: time
    closes: time  # 00:00 = midnight at the end of the day (24:00 in SQL)


@dataclass(frozen=True, slots=True)
class Closure:
    name: str
    starts_on: date
    ends_on: date  # inclusive


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    timezone: str = "UTC"
    description: str = ""
    hours: tuple[Hours, ...] = ()
    closures: tuple[Closure, ...] = ()
    id: int | None = None
    updated_at: datetime | None = None


# PostgreSQL spells midnight at the end of the day 24:00, which Python's time cannot hold.
_SELECT = """
SELECT s.id, s.name, s.timezone, s.description, s.updated_at,
       coalesce((SELECT array_agg(ARRAY[h.weekday::text, h.opens::text,
                                        CASE WHEN h.closes = '24:00' THEN '00:00:00'
                                             ELSE h.closes::text END]
                                  ORDER BY h.weekday, h.opens)
                   FROM schedule_hours h WHERE h.schedule_id = s.id), '{}') AS hours,
       coalesce((SELECT jsonb_agg(jsonb_build_object('name', c.name, 'starts_on', c.starts_on,
                                                     'ends_on', c.ends_on)
                                  ORDER BY c.starts_on, c.id)
                   FROM schedule_closures c WHERE c.schedule_id = s.id), '[]') AS closures
  FROM schedules s
"""


def _schedule(row: asyncpg.Record) -> Schedule:
    closures = from_jsonb(row["closures"])
    return Schedule(
        id=row["id"],
        name=row["name"],
        timezone=row["timezone"],
        description=row["description"],
        updated_at=row["updated_at"],
        hours=tuple(
            Hours(int(w), time.fromisoformat(o), time.fromisoformat(c)) for w, o, c in row["hours"]
        ),
        closures=tuple(
            Closure(c["name"], date.fromisoformat(c["starts_on"]), date.fromisoformat(c["ends_on"]))
            for c in closures
        ),
    )


async def list_schedules(db: Executor) -> list[Schedule]:
    return [_schedule(r) for r in await db.fetch(_SELECT + " ORDER BY s.name")]


async def get_schedule(db: Executor, name: str) -> Schedule | None:
    row = await db.fetchrow(_SELECT + " WHERE s.name = $1", name)
    return _schedule(row) if row else None


async def save_schedule(db: Executor, schedule: Schedule) -> Schedule:
    """Create or replace (by name) a schedule with all its hours and closures."""
    async with transaction(db) as conn:
        schedule_id = await conn.fetchval(
            """
            INSERT INTO schedules (name, timezone, description) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO UPDATE
               SET timezone = EXCLUDED.timezone, description = EXCLUDED.description
            RETURNING id
            """,
            schedule.name,
            schedule.timezone,
            schedule.description,
        )
        await conn.execute("DELETE FROM schedule_hours WHERE schedule_id = $1", schedule_id)
        await conn.execute("DELETE FROM schedule_closures WHERE schedule_id = $1", schedule_id)
        if schedule.hours:
            await conn.executemany(
                "INSERT INTO schedule_hours (schedule_id, weekday, opens, closes) VALUES"
                " ($1, $2, $3, CASE WHEN $4::time = '00:00' THEN '24:00'::time ELSE $4 END)",
                [(schedule_id, h.weekday, h.opens, h.closes) for h in schedule.hours],
            )
        if schedule.closures:
            await conn.executemany(
                "INSERT INTO schedule_closures (schedule_id, name, starts_on, ends_on)"
                " VALUES ($1, $2, $3, $4)",
                [(schedule_id, c.name, c.starts_on, c.ends_on) for c in schedule.closures],
            )
        row = await conn.fetchrow(_SELECT + " WHERE s.id = $1", schedule_id)
    return _schedule(row)


async def delete_schedule(db: Executor, name: str) -> bool:
    """Delete a schedule; fails (foreign key) while a menu still uses it."""
    return await db.fetchval("DELETE FROM schedules WHERE name = $1 RETURNING true", name) is True
