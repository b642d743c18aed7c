"""Queue definitions from PostgreSQL to Redis, with live reload.

:func:`load` reads ``queues``, ``agents`` and ``queue_members``; :func:`publish` validates
each row and writes it with the ``sync_*`` scripts (a row that fails validation is
reported and skipped: the last valid version stays live); :func:`watch` re-publishes on
every ``callyard_config`` notification about those tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from appserver.queues.model import AgentConfig, Member, QueueConfig, QueueConfigError
from appserver.queues.store import QueueError, QueueStore
from appserver.shells.aio import honour_cancel

log = logging.getLogger(__name__)
CHANNEL = "callyard_config"
TABLES = {"queues", "agents", "queue_members"}


@dataclass
class Snapshot:
    queues: list[QueueConfig] = field(default_factory=list)
    agents: list[AgentConfig] = field(default_factory=list)
    members: dict[str, list[Member]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _row(record: Any) -> dict[str, Any]:
    return {k: (json.loads(v) if k in ("skills", "required_skills") and isinstance(v, str)
                else v) for k, v in dict(record).items()}


async def load(pool: asyncpg.Pool) -> Snapshot:
    snap = Snapshot()
    async with pool.acquire() as conn:
        for rec in await conn.fetch("SELECT * FROM queues ORDER BY name"):
            try:
                snap.queues.append(QueueConfig.from_row(_row(rec)))
            except (QueueConfigError, TypeError) as exc:
                snap.errors.append(f"queue {rec['name']}: {exc}")
        for rec in await conn.fetch("SELECT * FROM agents ORDER BY username"):
            try:
                snap.agents.append(AgentConfig.from_row(_row(rec)))
            except (QueueConfigError, TypeError) as exc:
                snap.errors.append(f"agent {rec['username']}: {exc}")
        rows = await conn.fetch(
            "SELECT q.name AS queue, a.username AS agent, m.tier, m.penalty"
            " FROM queue_members m JOIN queues q ON q.id = m.queue_id"
            " JOIN agents a ON a.id = m.agent_id ORDER BY q.name, a.username"
        )
    agents = {a.username for a in snap.agents}
    for rec in rows:
        if rec["agent"] in agents:
            snap.members.setdefault(rec["queue"], []).append(
                Member(rec["agent"], int(rec["tier"]), int(rec["penalty"])))
    return snap


async def publish(store: QueueStore, snap: Snapshot) -> None:
    """Make Redis match ``snap``: sync every valid row, drop queues/agents deleted in SQL."""
    for err in snap.errors:
        log.error("queue definition rejected, previous version stays live: %s", err)
    for agent in snap.agents:
        await store.sync_agent(agent)
    for queue in snap.queues:
        await store.sync_queue(queue, snap.members.get(queue.name, []))
    rejected = {e.split(":", 1)[0] for e in snap.errors}
    live_queues = {q.name for q in snap.queues}
    for name in await store.queue_names():
        if name not in live_queues and f"queue {name}" not in rejected:
            await store.drop_queue(name)
    live_agents = {a.username for a in snap.agents}
    for name in sorted(await store.client.smembers(f"{store.prefix}agents")):
        name = name.decode() if isinstance(name, bytes) else name
        if name not in live_agents and f"agent {name}" not in rejected:
            try:
                await store.drop_agent(name)
            except QueueError as exc:
                log.warning("agent %s deleted but kept until the call ends: %s", name, exc)


async def reload(pool: asyncpg.Pool, store: QueueStore) -> Snapshot:
    snap = await load(pool)
    await publish(store, snap)
    return snap


async def watch(pool: asyncpg.Pool, store: QueueStore, debounce: float = 0.2) -> None:
    """Publish now and after every change to the queue tables, until cancelled, or until
    the listening connection is lost (a failover): then raise, for the caller to retry."""
    changed = asyncio.Event()
    lost = asyncio.Event()  # the connection is gone (and the pool took it back)

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            if json.loads(payload).get("table") in TABLES:
                changed.set()

    def on_lost(_conn: Any) -> None:
        lost.set()
        changed.set()

    async with pool.acquire() as conn:
        await conn.add_listener(CHANNEL, on_notify)
        conn.add_termination_listener(on_lost)
        try:
            await reload(pool, store)
            while True:
                await changed.wait()
                if lost.is_set():
                    raise asyncpg.ConnectionDoesNotExistError("the LISTEN connection was lost")
                await asyncio.sleep(debounce)
                changed.clear()
                try:
                    await reload(pool, store)
                except (asyncpg.PostgresError, OSError) as exc:
                    honour_cancel()
                    log.error("queue reload failed, will retry on the next change: %s", exc)
        finally:
            if not lost.is_set():
                conn.remove_termination_listener(on_lost)
                await conn.remove_listener(CHANNEL, on_notify)
