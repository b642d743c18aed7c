"""Queue membership: which agents answer which queue, at which tier and penalty."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from appserver.store.db import Executor, NotFoundError


@dataclass(frozen=True, slots=True)
class QueueMember:
    queue: str  # queue name
    agent: str  # agent username
    tier: int = 1  # 1 is offered first; higher tiers join after tier_widen_seconds
    penalty: int = 0  # 0..100, lower is preferred within a tier
    updated_at: datetime | None = None


_SELECT = """
SELECT q.name AS queue, a.username AS agent, m.tier, m.penalty, m.updated_at
  FROM queue_members m
  JOIN queues q ON q.id = m.queue_id
  JOIN agents a ON a.id = m.agent_id
"""


def _member(row: asyncpg.Record) -> QueueMember:
    return QueueMember(
        queue=row["queue"],
        agent=row["agent"],
        tier=row["tier"],
        penalty=row["penalty"],
        updated_at=row["updated_at"],
    )


async def list_members(
    db: Executor, *, queue: str | None = None, agent: str | None = None
) -> list[QueueMember]:
    """Memberships, optionally only those of one queue and/or one agent."""
    rows = await db.fetch(
        _SELECT
        + " WHERE ($1::text IS NULL OR q.name = $1) AND ($2::text IS NULL OR a.username = $2)"
        " ORDER BY q.name, m.tier, m.penalty, a.username",
        queue,
        agent,
    )
    return [_member(r) for r in rows]


async def save_member(db: Executor, member: QueueMember) -> QueueMember:
    """Add an agent to a queue, or change its tier and penalty there."""
    row = await db.fetchrow(
        """
        WITH q AS (SELECT id FROM queues WHERE name = $1),
             a AS (SELECT id FROM agents WHERE username = $2)
        INSERT INTO queue_members (queue_id, agent_id, tier, penalty)
        SELECT q.id, a.id, $3, $4 FROM q, a
        ON CONFLICT (queue_id, agent_id) DO UPDATE
           SET tier = EXCLUDED.tier, penalty = EXCLUDED.penalty
        RETURNING updated_at
        """,
        member.queue,
        member.agent,
        member.tier,
        member.penalty,
    )
    if row is None:
        raise NotFoundError(f"no queue {member.queue!r} or no agent {member.agent!r}")
    return QueueMember(member.queue, member.agent, member.tier, member.penalty, row["updated_at"])


async def remove_member(db: Executor, queue: str, agent: str) -> bool:
    result = await db.fetchval(
        """
        DELETE FROM queue_members m USING queues q, agents a
         WHERE m.queue_id = q.id AND m.agent_id = a.id AND q.name = $1 AND a.username = $2
        RETURNING true
        """,
        queue,
        agent,
    )
    return result is True
