"""Queue definitions (the ACD's configuration; runtime state lives in Redis)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import asyncpg

from appserver.store.db import Executor, from_jsonb


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    description: str = ""
    strategy: str = "longest_idle"
    max_wait_seconds: int | None = None
    max_length: int | None = None
    announce_interval: int = 30
    announce_position: bool = True
    announce_wait: bool = True
    moh_class: str = "default"
    wrapup_seconds: int = 10
    ring_timeout: int = 20
    max_no_answer: int = 3
    overflow_action: str = "hangup"
    overflow_target: str | None = None
    join_when_empty: bool = True
    leave_when_empty: bool = False
    exit_key: str | None = None
    exit_action: str | None = None
    exit_target: str | None = None
    service_level_seconds: int = 20
    tier_widen_seconds: int = 30
    required_skills: dict[str, int] = field(default_factory=dict)
    callback_key: str | None = None
    callback_announce: bool = True
    callback_max_attempts: int = 3
    callback_retry_seconds: int = 300
    callback_ring_seconds: int = 30
    callback_freeswitch_endpoint: str = "sofia/gateway/pstn/{number}"
    callback_asterisk_endpoint: str = "PJSIP/{number}@pstn"
    recording: str = "never"  # never | always | on_demand (migration 008)
    recording_announcement: str | None = None
    id: int | None = None
    updated_at: datetime | None = None


# Columns written by save_queue, in Queue field order.
_COLUMNS = [f.name for f in fields(Queue) if f.name not in ("id", "updated_at")]


def _queue(row: asyncpg.Record) -> Queue:
    values: dict[str, Any] = {f.name: row[f.name] for f in fields(Queue)}
    values["required_skills"] = dict(from_jsonb(row["required_skills"]))
    return Queue(**values)


async def list_queues(db: Executor) -> list[Queue]:
    return [_queue(r) for r in await db.fetch("SELECT * FROM queues ORDER BY name")]


async def get_queue(db: Executor, name: str) -> Queue | None:
    row = await db.fetchrow("SELECT * FROM queues WHERE name = $1", name)
    return _queue(row) if row else None


_PLACEHOLDERS = [
    f"${i}::text::jsonb" if c == "required_skills" else f"${i}" for i, c in enumerate(_COLUMNS, 1)
]
_UPSERT = (
    f"INSERT INTO queues ({', '.join(_COLUMNS)}) VALUES ({', '.join(_PLACEHOLDERS)})"
    " ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "name")
    + " RETURNING *"
)


async def save_queue(db: Executor, queue: Queue) -> Queue:
    """Create or replace (by name) a queue."""
    args: list[Any] = [getattr(queue, c) for c in _COLUMNS]
    args[_COLUMNS.index("required_skills")] = json.dumps(queue.required_skills)
    row = await db.fetchrow(_UPSERT, *args)
    return _queue(row)


async def delete_queue(db: Executor, name: str) -> bool:
    """Delete a queue and its memberships; fails (foreign key) while an extension uses it."""
    return await db.fetchval("DELETE FROM queues WHERE name = $1 RETURNING true", name) is True
