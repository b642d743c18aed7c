"""Repositories round-trip through a real PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import pytest

from appserver.store import agents, cdrs, extensions, members, menus, queues, schedules
from appserver.store.db import NotFoundError
from appserver.store.menus import Menu, MenuOption
from appserver.store.schedules import Closure, Hours, Schedule
from appserver.store.snapshot import load_snapshot


async def test_schedule_round_trip_and_replace(pg_pool: asyncpg.Pool) -> None:
    sched = Schedule(
        name="office",
        timezone="Europe/Paris",
        description="weekdays",
        hours=(Hours(0, time(9), time(12)), Hours(0, time(13), time(17, 30))),
        closures=(Closure("Christmas", date(2026, 12, 24), date(2026, 12, 26)),),
    )
    saved = await schedules.save_schedule(pg_pool, sched)
    assert saved.id is not None and saved.updated_at is not None
    assert (saved.name, saved.timezone, saved.hours, saved.closures) == (
        sched.name,
        sched.timezone,
        sched.hours,
        sched.closures,
    )
    assert await schedules.get_schedule(pg_pool, "office") == saved
    replaced = await schedules.save_schedule(
        pg_pool, Schedule(name="office", hours=(Hours(6, time(10), time(11)),))
    )
    assert replaced.id == saved.id
    assert replaced.timezone == "UTC" and replaced.closures == ()
    assert replaced.hours == (Hours(6, time(10), time(11)),)
    assert [s.name for s in await schedules.list_schedules(pg_pool)] == ["office"]
    assert await schedules.delete_schedule(pg_pool, "office") is True
    assert await schedules.delete_schedule(pg_pool, "office") is False
    assert await pg_pool.fetchval("SELECT count(*) FROM schedule_hours") == 0


async def test_menu_round_trip_with_options_and_schedule(pg_pool: asyncpg.Pool) -> None:
    await schedules.save_schedule(pg_pool, Schedule(name="office"))
    menu = Menu(
        name="main",
        description="front door",
        greeting=("file:ivr/welcome", "tts:Hello {{ caller }}"),
        invalid_prompt=("file:ivr/invalid",),
        first_digit_timeout=4.5,
        inter_digit_timeout=1.5,
        max_digits=2,
        terminator="",
        max_retries=2,
        exhausted_action="enqueue",
        exhausted_target="support",
        schedule="office",
        closed_action="play",
        language="fr-FR",
        options=(
            MenuOption("1", "enqueue", "sales:5", position=1),
            MenuOption("2", "submenu", "billing", prompt=("file:ivr/billing",), position=2),
            MenuOption("9", "play", None, prompt=("digits:123", "silence:500"), position=3),
            MenuOption("0", "hangup", position=4),
        ),
    )
    saved = await menus.save_menu(pg_pool, menu)
    assert saved.id is not None
    strip = [MenuOption(o.digits, o.action, o.target, o.prompt, o.position) for o in saved.options]
    assert strip == list(menu.options)
    assert all(o.id is not None for o in saved.options)
    for name in (
        "greeting",
        "invalid_prompt",
        "timeout_prompt",
        "first_digit_timeout",
        "inter_digit_timeout",
        "max_digits",
        "terminator",
        "schedule",
        "closed_action",
        "exhausted_target",
        "language",
    ):
        assert getattr(saved, name) == getattr(menu, name), name
    assert await menus.get_menu(pg_pool, "main") == saved

    fewer = await menus.save_menu(pg_pool, Menu(name="main", options=(MenuOption("5", "back"),)))
    assert fewer.id == saved.id
    assert [o.digits for o in fewer.options] == ["5"] and fewer.schedule is None
    assert [m.name for m in await menus.list_menus(pg_pool)] == ["main"]
    assert await menus.get_menu(pg_pool, "nope") is None


async def test_menu_with_unknown_schedule_is_rejected(pg_pool: asyncpg.Pool) -> None:
    with pytest.raises(NotFoundError, match="no schedule named 'ghost'"):
        await menus.save_menu(pg_pool, Menu(name="m", schedule="ghost", closed_action="hangup"))
    assert await menus.list_menus(pg_pool) == []


async def test_invalid_option_rolls_back_whole_menu(pg_pool: asyncpg.Pool) -> None:
    await menus.save_menu(pg_pool, Menu(name="main", options=(MenuOption("1", "hangup"),)))
    bad = Menu(name="main", greeting=("file:new",), options=(MenuOption("1", "dial", None),))
    with pytest.raises(asyncpg.CheckViolationError):
        await menus.save_menu(pg_pool, bad)
    kept = await menus.get_menu(pg_pool, "main")
    assert kept is not None and kept.greeting == () and kept.options[0].action == "hangup"


async def test_queue_agent_member_extension_round_trip(pg_pool: asyncpg.Pool) -> None:
    q = queues.Queue(
        name="support",
        strategy="skills",
        max_wait_seconds=300,
        overflow_action="menu",
        overflow_target="main",
        exit_key="0",
        exit_action="extension",
        exit_target="100",
        required_skills={"english": 3},
    )
    saved_q = await queues.save_queue(pg_pool, q)
    assert saved_q.id is not None
    assert saved_q == replace(q, id=saved_q.id, updated_at=saved_q.updated_at)
    for name in ("strategy", "max_wait_seconds", "overflow_target", "exit_key", "required_skills"):
        assert getattr(saved_q, name) == getattr(q, name), name
    assert await queues.get_queue(pg_pool, "support") == saved_q

    alice = await agents.save_agent(
        pg_pool,
        agents.Agent(
            "alice",
            "Alice A.",
            kind="sip",
            extension="2001",
            skills={"english": 5},
            password_hash="$argon2id$x",
        ),
    )
    assert alice.skills == {"english": 5} and alice.password_hash == "$argon2id$x"
    renamed = await agents.save_agent(
        pg_pool, agents.Agent("alice", "Alice B.", kind="sip", extension="2001")
    )
    assert renamed.display_name == "Alice B." and renamed.password_hash == "$argon2id$x"
    assert renamed.id == alice.id and renamed.created_at == alice.created_at
    assert await agents.set_password_hash(pg_pool, "alice", None) is True
    assert (await agents.get_agent(pg_pool, "alice")).password_hash is None  # type: ignore[union-attr]

    m = await members.save_member(
        pg_pool, members.QueueMember("support", "alice", tier=2, penalty=5)
    )
    assert (m.tier, m.penalty) == (2, 5) and m.updated_at is not None
    assert await members.list_members(pg_pool, queue="support") == [m]
    assert await members.list_members(pg_pool, agent="bob") == []
    with pytest.raises(NotFoundError):
        await members.save_member(pg_pool, members.QueueMember("support", "bob"))

    for ext in (
        extensions.Extension("100", "queue", "support", "support line"),
        extensions.Extension("2001", "agent", "alice"),
        extensions.Extension("2999", "user", "user/2999"),
    ):
        saved = await extensions.save_extension(pg_pool, ext)
        assert (saved.number, saved.kind, saved.target) == (ext.number, ext.kind, ext.target)
        assert await extensions.get_extension(pg_pool, ext.number) == saved
    with pytest.raises(NotFoundError, match="no menu named 'ghost'"):
        await extensions.save_extension(pg_pool, extensions.Extension("5", "menu", "ghost"))
    assert [e.number for e in await extensions.list_extensions(pg_pool)] == ["100", "2001", "2999"]

    # Deleting the agent removes its memberships but not while an extension points at it.
    with pytest.raises(asyncpg.RestrictViolationError):
        await agents.delete_agent(pg_pool, "alice")
    assert await extensions.delete_extension(pg_pool, "2001") is True
    assert await agents.delete_agent(pg_pool, "alice") is True
    assert await members.list_members(pg_pool) == []
    assert await members.remove_member(pg_pool, "support", "alice") is False


async def test_cdr_insert_is_idempotent_and_search_filters(pg_pool: asyncpg.Pool) -> None:
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    batch = [
        cdrs.Cdr(
            call_id=f"c{i}",
            engine="freeswitch" if i % 2 else "asterisk",
            started_at=t0 + timedelta(minutes=i),
            caller=f"+1555000{i % 3}",
            called="9999",
            queue="support" if i < 5 else None,
            agent="alice" if i in (1, 2) else None,
            wait_seconds=1.25 * i,
            menu_path=("main", "support"),
            disposition="answered" if i in (1, 2) else "abandoned",
            extra={"recording": f"r{i}.wav"},
        )
        for i in range(8)
    ]
    assert await cdrs.insert_cdrs(pg_pool, batch) == [f"c{i}" for i in range(8)]
    assert await cdrs.insert_cdrs(pg_pool, batch[:3]) == []
    assert await cdrs.insert_cdr(pg_pool, batch[0]) is False

    got = await cdrs.get_cdr(pg_pool, "c3")
    assert got is not None and got.inserted_at is not None
    assert got == replace(batch[3], inserted_at=got.inserted_at)

    page = await cdrs.search_cdrs(pg_pool, limit=3)
    assert page.total == 8 and [c.call_id for c in page.items] == ["c7", "c6", "c5"]
    page2 = await cdrs.search_cdrs(pg_pool, limit=3, offset=6)
    assert [c.call_id for c in page2.items] == ["c1", "c0"]
    q = await cdrs.search_cdrs(pg_pool, queue="support", disposition="abandoned")
    assert [c.call_id for c in q.items] == ["c4", "c3", "c0"] and q.total == 3
    window = await cdrs.search_cdrs(
        pg_pool, since=t0 + timedelta(minutes=2), until=t0 + timedelta(minutes=4)
    )
    assert [c.call_id for c in window.items] == ["c3", "c2"]
    assert (await cdrs.search_cdrs(pg_pool, caller="+15550001")).total == 3
    assert (await cdrs.search_cdrs(pg_pool, agent="alice", called="9999")).total == 2
    with pytest.raises(ValueError, match="limit"):
        await cdrs.search_cdrs(pg_pool, limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await cdrs.insert_cdr(pg_pool, cdrs.Cdr("naive", "asterisk", datetime(2026, 1, 1)))


async def test_repositories_work_on_a_bare_connection(pg_dsn: str) -> None:
    # Without the pool's jsonb codec (e.g. a LISTEN connection), jsonb still round-trips.
    conn = await asyncpg.connect(pg_dsn)
    try:
        a = await agents.save_agent(conn, agents.Agent("bob", "Bob", skills={"french": 2}))
        assert a.skills == {"french": 2}
        await cdrs.insert_cdr(
            conn, cdrs.Cdr("x", "asterisk", datetime(2026, 1, 1, tzinfo=UTC), extra={"k": 1})
        )
        assert (await cdrs.get_cdr(conn, "x")).extra == {"k": 1}  # type: ignore[union-attr]
    finally:
        await conn.close()


async def test_snapshot_reads_everything_consistently(pg_pool: asyncpg.Pool) -> None:
    await schedules.save_schedule(pg_pool, Schedule(name="office"))
    await menus.save_menu(pg_pool, Menu(name="main", options=(MenuOption("1", "hangup"),)))
    await queues.save_queue(pg_pool, queues.Queue(name="support"))
    await agents.save_agent(pg_pool, agents.Agent("alice", "Alice"))
    await members.save_member(pg_pool, members.QueueMember("support", "alice"))
    await extensions.save_extension(pg_pool, extensions.Extension("100", "menu", "main"))
    snap = await load_snapshot(pg_pool)
    assert [m.name for m in snap.menus] == ["main"] and snap.menus[0].options[0].digits == "1"
    assert [s.name for s in snap.schedules] == ["office"]
    assert [(e.number, e.target) for e in snap.extensions] == [("100", "main")]
    assert [q.name for q in snap.queues] == ["support"]
    assert [a.username for a in snap.agents] == ["alice"]
    assert [(m.queue, m.agent) for m in snap.members] == [("support", "alice")]

    # Inside an open transaction it reads that transaction's view (uncommitted rows included).
    async with pg_pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO queues (name) VALUES ('sales')")
        inner = await load_snapshot(conn)
        assert [q.name for q in inner.queues] == ["sales", "support"]
