"""Extensions: the dialled numbers Callyard answers and what each one reaches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from appserver.store.db import Executor, NotFoundError


@dataclass(frozen=True, slots=True)
class Extension:
    number: str
    kind: str  # 'menu', 'queue', 'agent' or 'user'
    # The target, by name: a menu name, queue name, agent username, or for 'user' the
    # endpoint to dial (e.g. "1001" or a SIP URI the engine's dial template accepts).
    target: str
    description: str = ""
    updated_at: datetime | None = None


_SELECT = """
SELECT e.number, e.kind, e.description, e.updated_at,
       coalesce(m.name, q.name, a.username, e.dial_target) AS target
  FROM extensions e
  LEFT JOIN ivr_menus m ON m.id = e.menu_id
  LEFT JOIN queues q ON q.id = e.queue_id
  LEFT JOIN agents a ON a.id = e.agent_id
"""


def _extension(row: asyncpg.Record) -> Extension:
    return Extension(
        number=row["number"],
        kind=row["kind"],
        target=row["target"],
        description=row["description"],
        updated_at=row["updated_at"],
    )


async def list_extensions(db: Executor) -> list[Extension]:
    return [_extension(r) for r in await db.fetch(_SELECT + " ORDER BY e.number")]


async def get_extension(db: Executor, number: str) -> Extension | None:
    row = await db.fetchrow(_SELECT + " WHERE e.number = $1", number)
    return _extension(row) if row else None


_REFERENCE = {
    "menu": "SELECT id FROM ivr_menus WHERE name = $1",
    "queue": "SELECT id FROM queues WHERE name = $1",
    "agent": "SELECT id FROM agents WHERE username = $1",
}


async def save_extension(db: Executor, extension: Extension) -> Extension:
    """Create or replace (by number) an extension; menu/queue/agent targets must exist."""
    ids: dict[str, int | None] = {"menu": None, "queue": None, "agent": None}
    dial_target = None
    if extension.kind in _REFERENCE:
        ids[extension.kind] = await db.fetchval(_REFERENCE[extension.kind], extension.target)
        if ids[extension.kind] is None:
            raise NotFoundError(
                f"extension {extension.number}: no {extension.kind} named {extension.target!r}"
            )
    else:
        dial_target = extension.target  # kind 'user'; other kinds fail the table's CHECK
    row = await db.fetchrow(
        """
        INSERT INTO extensions (number, kind, menu_id, queue_id, agent_id, dial_target, description)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (number) DO UPDATE SET
            kind = EXCLUDED.kind, menu_id = EXCLUDED.menu_id, queue_id = EXCLUDED.queue_id,
            agent_id = EXCLUDED.agent_id, dial_target = EXCLUDED.dial_target,
            description = EXCLUDED.description
        RETURNING updated_at
        """,
        extension.number,
        extension.kind,
        ids["menu"],
        ids["queue"],
        ids["agent"],
        dial_target,
        extension.description,
    )
    return Extension(
        extension.number,
        extension.kind,
        extension.target,
        extension.description,
        row["updated_at"],
    )


async def delete_extension(db: Executor, number: str) -> bool:
    result = await db.fetchval("DELETE FROM extensions WHERE number = $1 RETURNING true", number)
    return result is True
