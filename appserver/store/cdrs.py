"""Call detail records: idempotent inserts (by call id) and filtered, paginated search."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from appserver.store.db import Executor, from_jsonb

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Cdr:
    call_id: str
    engine: str  # 'freeswitch' or 'asterisk'
    started_at: datetime  # timezone-aware
    node: str = ""
    caller: str = ""
    called: str = ""
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    menu_path: tuple[str, ...] = ()
    queue: str | None = None
    wait_seconds: float | None = None
    agent: str | None = None
    # 'answered', 'abandoned', 'overflow', 'transferred', 'hangup', 'failed' or 'voicemail'
    disposition: str | None = None
    hangup_cause: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    inserted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CdrPage:
    items: list[Cdr]
    total: int  # rows matching the filters, over all pages
    limit: int
    offset: int


_COLUMNS = (
    "call_id, engine, node, caller, called, started_at, answered_at, ended_at, menu_path,"
    " queue, wait_seconds, agent, disposition, hangup_cause, extra"
)


def _cdr(row: asyncpg.Record) -> Cdr:
    wait = row["wait_seconds"]
    return Cdr(
        call_id=row["call_id"],
        engine=row["engine"],
        node=row["node"],
        caller=row["caller"],
        called=row["called"],
        started_at=row["started_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        menu_path=tuple(row["menu_path"]),
        queue=row["queue"],
        wait_seconds=None if wait is None else round(float(wait), 3),
        agent=row["agent"],
        disposition=row["disposition"],
        hangup_cause=row["hangup_cause"],
        extra=dict(from_jsonb(row["extra"])),
        inserted_at=row["inserted_at"],
    )


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"CDR times must be timezone-aware, got {value!r}")
    return value.isoformat()


def _record(cdr: Cdr) -> dict[str, Any]:
    return {
        "call_id": cdr.call_id,
        "engine": cdr.engine,
        "node": cdr.node,
        "caller": cdr.caller,
        "called": cdr.called,
        "started_at": _time(cdr.started_at),
        "answered_at": _time(cdr.answered_at),
        "ended_at": _time(cdr.ended_at),
        "menu_path": list(cdr.menu_path),
        "queue": cdr.queue,
        "wait_seconds": cdr.wait_seconds,
        "agent": cdr.agent,
        "disposition": cdr.disposition,
        "hangup_cause": cdr.hangup_cause,
        "extra": cdr.extra,
    }


_RECORDSET = """jsonb_to_recordset($1::text::jsonb) AS r(
       call_id text, engine text, node text, caller text, called text,
       started_at timestamptz, answered_at timestamptz, ended_at timestamptz, menu_path text[],
       queue text, wait_seconds real, agent text, disposition text, hangup_cause text,
       extra jsonb)"""

_INSERT = f"""
INSERT INTO cdrs ({_COLUMNS})
SELECT {_COLUMNS}
  FROM {_RECORDSET}
ON CONFLICT (call_id) DO NOTHING
RETURNING call_id
"""

_CONTENT = [name.strip() for name in _COLUMNS.split(",")][1:]  # every column but call_id
_DIFFERING = f"""
SELECT r.call_id
  FROM {_RECORDSET}
  JOIN cdrs c USING (call_id)
 WHERE ({", ".join("c." + n for n in _CONTENT)}) IS DISTINCT FROM
       ({", ".join("r." + n for n in _CONTENT)})
"""


async def insert_cdrs(db: Executor, cdrs: list[Cdr]) -> list[str]:
    """Insert a batch in one statement; return the call ids that were new.

    Call ids already stored are skipped (a redelivered CDR is not an error; see
    :func:`differing_cdrs` for those whose stored record is another). A row that breaks a
    constraint fails the whole batch with the database's error.
    """
    if not cdrs:
        return []
    rows = await db.fetch(_INSERT, json.dumps([_record(c) for c in cdrs]))
    return [r["call_id"] for r in rows]


async def differing_cdrs(db: Executor, cdrs: list[Cdr]) -> list[str]:
    """Call ids of ``cdrs`` stored with a different record (compared column by column in
    the columns' own types, so a redelivered record always matches itself)."""
    if not cdrs:
        return []
    rows = await db.fetch(_DIFFERING, json.dumps([_record(c) for c in cdrs]))
    return [r["call_id"] for r in rows]


async def insert_cdr(db: Executor, cdr: Cdr) -> bool:
    """Insert one CDR; False when its call id was already stored."""
    return bool(await insert_cdrs(db, [cdr]))


async def get_cdr(db: Executor, call_id: str) -> Cdr | None:
    row = await db.fetchrow("SELECT * FROM cdrs WHERE call_id = $1", call_id)
    return _cdr(row) if row else None


async def search_cdrs(
    db: Executor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    caller: str | None = None,
    called: str | None = None,
    queue: str | None = None,
    agent: str | None = None,
    disposition: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> CdrPage:
    """CDRs matching every given filter, newest first. ``since`` is inclusive, ``until``
    exclusive (on ``started_at``); the other filters are exact matches."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    where = """
     WHERE ($1::timestamptz IS NULL OR started_at >= $1)
       AND ($2::timestamptz IS NULL OR started_at < $2)
       AND ($3::text IS NULL OR caller = $3)
       AND ($4::text IS NULL OR called = $4)
       AND ($5::text IS NULL OR queue = $5)
       AND ($6::text IS NULL OR agent = $6)
       AND ($7::text IS NULL OR disposition = $7)
    """
    args = (since, until, caller, called, queue, agent, disposition)
    total = await db.fetchval("SELECT count(*) FROM cdrs" + where, *args)
    rows = await db.fetch(
        "SELECT * FROM cdrs" + where + " ORDER BY started_at DESC, call_id LIMIT $8 OFFSET $9",
        *args,
        limit,
        offset,
    )
    return CdrPage([_cdr(r) for r in rows], int(total), limit, offset)
