"""Every edit of a configuration table NOTIFYs 'callyard_config' with table, op and id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

CHANNEL = "callyard_config"


@pytest_asyncio.fixture(loop_scope="session")
async def notes(pg_dsn: str) -> AsyncIterator[asyncio.Queue[dict[str, str]]]:
    """Payloads received on a LISTEN connection, decoded."""
    received: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    conn = await asyncpg.connect(pg_dsn)

    def on_notify(_c: object, _pid: int, channel: str, payload: str) -> None:
        assert channel == CHANNEL
        received.put_nowait(json.loads(payload))

    await conn.add_listener(CHANNEL, on_notify)
    try:
        yield received
    finally:
        await conn.close()


async def _drain(q: asyncio.Queue[dict[str, str]], count: int) -> list[dict[str, str]]:
    items = [await asyncio.wait_for(q.get(), 5) for _ in range(count)]
    await asyncio.sleep(0.05)
    assert q.empty(), f"unexpected extra notifications: {q.get_nowait()}"
    return items


async def test_each_config_table_notifies(
    pg_pool: asyncpg.Pool, notes: asyncio.Queue[dict[str, str]]
) -> None:
    sched = await pg_pool.fetchval("INSERT INTO schedules (name) VALUES ('office') RETURNING id")
    hours = await pg_pool.fetchval(
        "INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)"
        " VALUES ($1, 0, '09:00', '17:00') RETURNING id",
        sched,
    )
    closure = await pg_pool.fetchval(
        "INSERT INTO schedule_closures (schedule_id, name, starts_on, ends_on)"
        " VALUES ($1, 'x', '2026-01-01', '2026-01-01') RETURNING id",
        sched,
    )
    menu = await pg_pool.fetchval("INSERT INTO ivr_menus (name) VALUES ('main') RETURNING id")
    option = await pg_pool.fetchval(
        "INSERT INTO ivr_menu_options (menu_id, digits, action) VALUES ($1, '1', 'hangup')"
        " RETURNING id",
        menu,
    )
    queue = await pg_pool.fetchval("INSERT INTO queues (name) VALUES ('q') RETURNING id")
    agent = await pg_pool.fetchval(
        "INSERT INTO agents (username, display_name) VALUES ('al', 'Al') RETURNING id"
    )
    await pg_pool.execute(
        "INSERT INTO queue_members (queue_id, agent_id) VALUES ($1, $2)", queue, agent
    )
    await pg_pool.execute(
        "INSERT INTO extensions (number, kind, menu_id) VALUES ('100', 'menu', $1)", menu
    )
    got = await _drain(notes, 9)
    assert got == [
        {"table": "schedules", "op": "INSERT", "id": str(sched)},
        {"table": "schedule_hours", "op": "INSERT", "id": str(hours)},
        {"table": "schedule_closures", "op": "INSERT", "id": str(closure)},
        {"table": "ivr_menus", "op": "INSERT", "id": str(menu)},
        {"table": "ivr_menu_options", "op": "INSERT", "id": str(option)},
        {"table": "queues", "op": "INSERT", "id": str(queue)},
        {"table": "agents", "op": "INSERT", "id": str(agent)},
        {"table": "queue_members", "op": "INSERT", "id": f"{queue}:{agent}"},
        {"table": "extensions", "op": "INSERT", "id": "100"},
    ]

    await pg_pool.execute("UPDATE ivr_menu_options SET digits = '2'")
    await pg_pool.execute("UPDATE queue_members SET tier = 2")
    await pg_pool.execute("DELETE FROM extensions")
    assert await _drain(notes, 3) == [
        {"table": "ivr_menu_options", "op": "UPDATE", "id": str(option)},
        {"table": "queue_members", "op": "UPDATE", "id": f"{queue}:{agent}"},
        {"table": "extensions", "op": "DELETE", "id": "100"},
    ]

    # A cascade notifies for the children too.
    await pg_pool.execute("DELETE FROM ivr_menus")
    got = await _drain(notes, 2)
    assert sorted((n["table"], n["op"]) for n in got) == [
        ("ivr_menu_options", "DELETE"),
        ("ivr_menus", "DELETE"),
    ]


async def test_rolled_back_edit_does_not_notify(
    pg_pool: asyncpg.Pool, notes: asyncio.Queue[dict[str, str]]
) -> None:
    async with pg_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO queues (name) VALUES ('q')")
        await tx.rollback()
    await pg_pool.execute("INSERT INTO queues (name) VALUES ('kept')")
    (note,) = await _drain(notes, 1)
    assert note["table"] == "queues" and note["op"] == "INSERT"


async def test_cdrs_do_not_notify(
    pg_pool: asyncpg.Pool, notes: asyncio.Queue[dict[str, str]]
) -> None:
    await pg_pool.execute(
        "INSERT INTO cdrs (call_id, engine, started_at) VALUES ('c', 'asterisk', now())"
    )
    await pg_pool.execute("INSERT INTO queues (name) VALUES ('marker')")
    (note,) = await _drain(notes, 1)
    assert note["table"] == "queues"
