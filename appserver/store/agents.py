"""Agents: who can log in to the console and take calls, and their skills."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from appserver.store.db import Executor, from_jsonb


@dataclass(frozen=True, slots=True)
class Agent:
    username: str
    display_name: str
    kind: str = "browser"  # 'browser' (LiveKit console) or 'sip' (a phone at `extension`)
    extension: str | None = None
    role: str = "agent"  # 'agent', 'supervisor' or 'admin'
    skills: dict[str, int] = field(default_factory=dict)
    enabled: bool = True
    # argon2 hash; never exposed by the API. save_agent keeps the stored one when None.
    password_hash: str | None = field(default=None, repr=False)
    id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _agent(row: asyncpg.Record) -> Agent:
    return Agent(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        kind=row["kind"],
        extension=row["extension"],
        role=row["role"],
        skills=dict(from_jsonb(row["skills"])),
        enabled=row["enabled"],
        password_hash=row["password_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def list_agents(db: Executor) -> list[Agent]:
    return [_agent(r) for r in await db.fetch("SELECT * FROM agents ORDER BY username")]


async def get_agent(db: Executor, username: str) -> Agent | None:
    row = await db.fetchrow("SELECT * FROM agents WHERE username = $1", username)
    return _agent(row) if row else None


async def save_agent(db: Executor, agent: Agent) -> Agent:
    """Create or update (by username) an agent. A ``None`` password_hash keeps the stored one."""
    row = await db.fetchrow(
        """
        INSERT INTO agents (username, display_name, kind, extension, role, skills, enabled,
                            password_hash)
        VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)
        ON CONFLICT (username) DO UPDATE SET
            display_name = EXCLUDED.display_name, kind = EXCLUDED.kind,
            extension = EXCLUDED.extension, role = EXCLUDED.role, skills = EXCLUDED.skills,
            enabled = EXCLUDED.enabled,
            password_hash = coalesce(EXCLUDED.password_hash, agents.password_hash)
        RETURNING *
        """,
        agent.username,
        agent.display_name,
        agent.kind,
        agent.extension,
        agent.role,
        json.dumps(agent.skills),
        agent.enabled,
        agent.password_hash,
    )
    return _agent(row)


async def set_password_hash(db: Executor, username: str, password_hash: str | None) -> bool:
    """Replace (or clear, with None) an agent's password hash; False if no such agent."""
    result = await db.fetchval(
        "UPDATE agents SET password_hash = $2 WHERE username = $1 RETURNING true",
        username,
        password_hash,
    )
    return result is True


async def delete_agent(db: Executor, username: str) -> bool:
    """Delete an agent and its memberships; fails (foreign key) while an extension uses it."""
    result = await db.fetchval("DELETE FROM agents WHERE username = $1 RETURNING true", username)
    return result is True
