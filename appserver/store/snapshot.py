"""One consistent read of the whole configuration (what the IVR compiler needs)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from appserver.store.agents import Agent, list_agents
from appserver.store.db import Executor
from appserver.store.extensions import Extension, list_extensions
from appserver.store.members import QueueMember, list_members
from appserver.store.menus import Menu, list_menus
from appserver.store.queues import Queue, list_queues
from appserver.store.schedules import Schedule, list_schedules


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    menus: list[Menu]
    schedules: list[Schedule]
    extensions: list[Extension]
    queues: list[Queue]
    agents: list[Agent]
    members: list[QueueMember]


async def _read(conn: asyncpg.Connection) -> ConfigSnapshot:
    return ConfigSnapshot(
        menus=await list_menus(conn),
        schedules=await list_schedules(conn),
        extensions=await list_extensions(conn),
        queues=await list_queues(conn),
        agents=await list_agents(conn),
        members=await list_members(conn),
    )


async def load_snapshot(db: Executor) -> ConfigSnapshot:
    """Every configuration table as of one instant (a REPEATABLE READ, read-only transaction),
    so an edit committed half-way through the read is either wholly in or wholly out."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await load_snapshot(conn)
    if db.is_in_transaction():
        return await _read(db)
    async with db.transaction(isolation="repeatable_read", readonly=True):
        return await _read(db)
