"""Live reload with real PostgreSQL and Redis: SQL edits -> new versions; bad edits rejected."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import time as dtime
from pathlib import Path

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from appserver.menus import keys
from appserver.menus.loader import load_source
from appserver.menus.publisher import MenuPublisher
from appserver.menus.readers import MenuSetReader
from appserver.menus.reloader import RELOADS, MenuReloader
from ivr.calls import CallInfo, Dtmf, Enqueue, Play, Prompt
from ivr.compile import MenuSet, compile_menuset
from ivr.model import MenuDef, OptionDef
from ivr.testing import build_menuset

ROOT = Path(__file__).resolve().parents[1]

SEED = """
INSERT INTO queues (name) VALUES ('support');
INSERT INTO schedules (name, timezone) VALUES ('office', 'Europe/Paris');
INSERT INTO schedule_hours (schedule_id, weekday, opens, closes)
     SELECT id, d, '09:00', '24:00' FROM schedules, generate_series(0, 6) AS d;
INSERT INTO schedule_closures (schedule_id, name, starts_on, ends_on)
     SELECT id, 'May Day', '2026-05-01', '2026-05-01' FROM schedules;
INSERT INTO ivr_menus (name, greeting, invalid_prompt, max_retries)
     VALUES ('main', '{file:ivr/welcome}', '{file:ivr/invalid}', 1);
INSERT INTO ivr_menus (name, greeting, schedule_id, closed_action)
     SELECT 'sales', '{"tts:Sales for {{ caller }}"}', id, 'hangup' FROM schedules;
INSERT INTO ivr_menu_options (menu_id, digits, action, target, position)
     SELECT id, '1', 'submenu', 'sales', 1 FROM ivr_menus WHERE name = 'main';
INSERT INTO ivr_menu_options (menu_id, digits, action, target, position)
     SELECT id, '2', 'enqueue', 'support:3', 2 FROM ivr_menus WHERE name = 'main';
INSERT INTO extensions (number, kind, menu_id) SELECT '9999', 'menu', id FROM ivr_menus
     WHERE name = 'main';
INSERT INTO extensions (number, kind, dial_target) VALUES ('200', 'user', 'alice');
"""


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(pg_pool: asyncpg.Pool) -> asyncpg.Pool:
    await pg_pool.execute(SEED)
    return pg_pool


@pytest_asyncio.fixture(loop_scope="session")
async def reloader(
    seeded: asyncpg.Pool, pg_dsn: str, redis_client: aioredis.Redis
) -> AsyncIterator[MenuReloader]:
    r = MenuReloader(pg_dsn, redis_client, pool=seeded, debounce=0.05)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def live_version(client: aioredis.Redis) -> int:
    raw = await client.get(keys.CURRENT)
    assert raw is not None, "no version published"
    return int(raw)


async def stored(client: aioredis.Redis, version: int) -> MenuSet:
    doc = await client.get(keys.version_key(version))
    assert doc is not None, f"v{version} not in Redis"
    return MenuSet.from_json(doc)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 1.0) -> float:
    """Seconds until ``await predicate()`` was true; fails after ``timeout``."""
    t0 = time.monotonic()
    while not await predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def test_loader_reads_the_tables(seeded: asyncpg.Pool) -> None:
    source = await load_source(seeded)
    main = next(m for m in source.menus if m.name == "main")
    assert [(o.digits, o.action, o.target) for o in main.options] == [
        ("1", "submenu", "sales"),
        ("2", "enqueue", "support:3"),
    ]
    assert main.invalid_prompt == ("file:ivr/invalid",) and main.timeout_prompt == ()
    office = source.schedules[0]
    assert office.hours[0].closes == dtime(0, 0)  # 24:00 in SQL = midnight at the end of day
    assert office.closures[0].name == "May Day"
    assert source.queues == frozenset({"support"})
    assert {(e.number, e.kind, e.target) for e in source.extensions} == {
        ("9999", "menu", "main"),
        ("200", "user", "alice"),
    }
    ms = compile_menuset(source)
    assert ms.menus["sales"].schedule == "office"


async def test_start_publishes_version_and_status(
    reloader: MenuReloader, redis_client: aioredis.Redis
) -> None:
    version = await live_version(redis_client)
    assert version == reloader.version
    ms = await stored(redis_client, version)
    assert ms.version == version and set(ms.menus) == {"main", "sales"}
    status = await reloader.publisher.status()
    assert status["version"] == version and status["digest"] == ms.digest
    assert status["last_error"] == "" and status["errors"] == []
    assert status["published_at"]


async def test_sql_edit_of_options_is_live_within_one_second(
    reloader: MenuReloader, seeded: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    reader = MenuSetReader(redis_client, poll_interval=30)
    await reader.start()
    try:
        before = await live_version(redis_client)
        assert reader.version == before
        old = reader.current
        assert old is not None
        running = old.flow_for("9999")  # a call in progress on the old version
        assert running is not None
        running.start(CallInfo("c1", "test", "+15550100", "9999"))

        await seeded.execute(
            "UPDATE ivr_menu_options SET digits = '3' WHERE digits = '2'"
        )  # plain SQL, as an operator in psql would
        t0 = time.monotonic()

        async def bumped() -> bool:
            return await live_version(redis_client) > before

        await wait_until(bumped, 1.0)
        elapsed = time.monotonic() - t0
        print(f"SQL edit live in Redis after {elapsed * 1000:.0f} ms")
        assert elapsed < 1.0
        new = await stored(redis_client, await live_version(redis_client))
        assert set(new.menus["main"].by_digits) == {"1", "3"}
        assert await reader.wait_for_version(new.version, 2.0)
        assert reader.current is not None and "3" in reader.current.menus["main"].by_digits
        # The running call still walks the version it started with.
        assert running.menuset is old
        assert Enqueue("support", 3) in running.handle(Dtmf("2"))
        # New calls get the new version.
        fresh = reader.flow_for("9999")
        assert fresh is not None and fresh.menuset.version == new.version
    finally:
        await reader.stop()


async def test_invalid_sql_edit_keeps_the_old_version_and_reports_why(
    reloader: MenuReloader, seeded: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    before = await live_version(redis_client)
    invalid_before = RELOADS.labels("invalid")._value.get()
    await seeded.execute(
        "INSERT INTO ivr_menu_options (menu_id, digits, action, target)"
        " SELECT id, '4', 'submenu', 'nowhere' FROM ivr_menus WHERE name = 'main'"
    )

    async def rejected() -> bool:
        return bool((await reloader.publisher.status())["last_error"])

    await wait_until(rejected, 1.0)
    status = await reloader.publisher.status()
    assert await live_version(redis_client) == before
    assert status["version"] == before
    assert (
        "menu 'main', option '4': action submenu target 'nowhere' does not exist"
        in (status["last_error"])
    )
    assert status["errors"][0]["menu"] == "main" and status["errors"][0]["option"] == "4"
    assert status["error_count"] == 1 and status["last_error_at"]
    assert RELOADS.labels("invalid")._value.get() == invalid_before + 1
    assert "nowhere" in reloader.last_error
    # Fixing the edit clears the error; the content equals the live version: no new version.
    await seeded.execute("DELETE FROM ivr_menu_options WHERE target = 'nowhere'")

    async def cleared() -> bool:
        return (await reloader.publisher.status())["last_error"] == ""

    await wait_until(cleared, 1.0)
    assert await live_version(redis_client) == before


async def test_unrelated_or_cosmetic_edits_do_not_bump_the_version(
    reloader: MenuReloader, seeded: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    before = await live_version(redis_client)
    checked = (await reloader.publisher.status())["checked_at"]
    await seeded.execute("UPDATE ivr_menus SET description = 'renamed' WHERE name = 'main'")

    async def rechecked() -> bool:
        return (await reloader.publisher.status())["checked_at"] != checked

    await wait_until(rechecked, 1.0)
    assert await live_version(redis_client) == before


async def test_a_burst_of_edits_is_debounced(
    reloader: MenuReloader, seeded: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    before = await live_version(redis_client)
    for i in range(20):
        await seeded.execute(
            "UPDATE ivr_menus SET greeting = $1 WHERE name = 'main'", [f"file:ivr/take{i}"]
        )

    async def settled() -> bool:
        v = await live_version(redis_client)
        doc = await stored(redis_client, v)
        return doc.menus["main"].greeting == (Prompt("file", "ivr/take19"),)

    await wait_until(settled, 2.0)
    assert await live_version(redis_client) - before <= 3


async def test_versions_are_monotonic_and_old_ones_expire(redis_client: aioredis.Redis) -> None:
    publisher = MenuPublisher(redis_client)
    a = build_menuset([MenuDef("a", greeting=("file:a",))])
    b = build_menuset([MenuDef("a", greeting=("file:b",))])
    assert await publisher.publish(a) == (True, 1)
    assert await publisher.publish(a) == (False, 1)
    assert await publisher.publish(b) == (True, 2)
    assert await publisher.publish(a) == (True, 3)
    assert 0 < await redis_client.ttl(keys.version_key(1)) <= keys.OLD_VERSION_TTL
    assert await redis_client.ttl(keys.version_key(3)) == -1
    loaded = await stored(redis_client, 3)
    assert loaded.version == 3 and loaded.digest == a.digest


# The reader under gevent, as the FreeSWITCH worker runs it: a process of its own (gevent
# patches the standard library), stepped over stdin/stdout by the test.
GEVENT_READER = """
from gevent import monkey
monkey.patch_all()
import sys
import redis
from appserver.menus.readers import MenuSetReader
from appserver.shells.green import run
from ivr.calls import CallInfo, Play, Prompt

def step(name):
    print(name, flush=True)
    assert sys.stdin.readline().strip() == "go"

reader = MenuSetReader(redis.Redis.from_url(sys.argv[1], decode_responses=True), poll_interval=30)
assert run(reader.refresh()) is None and reader.flow_for("9999") is None
step("empty")
run(reader.start())
seen = []
reader.on_update(lambda ms: seen.append(ms.version))
assert reader.version == 1
flow = reader.flow_for("9999")
assert flow is not None
cmds = flow.start(CallInfo("c", "test", "1", "9999"))
assert Play("ivr1", (Prompt("file", "one"),), "0123456789*#ABCD", "en") in cmds
step("v1")
assert run(reader.wait_for_version(2, 2.0))
assert seen == [2]
assert reader.current is not None and reader.current.menus["m"].greeting[0].value == "two"
run(reader.stop())
print("ok", flush=True)
"""


async def test_reader_follows_publications_under_gevent(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    publisher = MenuPublisher(redis_client)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", GEVENT_READER, redis_url, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    async def reached(name: str) -> None:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        assert line.decode().strip() == name, (await proc.communicate())[1].decode()[-3000:]

    try:
        await reached("empty")
        await publisher.publish(build_menuset([MenuDef("m", greeting=("file:one",))]))
        proc.stdin.write(b"go\n")
        await reached("v1")
        menu = MenuDef("m", greeting=("file:two",), options=(OptionDef("1", "hangup"),))
        await publisher.publish(build_menuset([menu]))
        proc.stdin.write(b"go\n")
        await reached("ok")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_reader_keeps_current_when_redis_holds_garbage(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await MenuPublisher(redis_client).publish(build_menuset([MenuDef("m", greeting=("file:x",))]))
    reader = MenuSetReader(aioredis.Redis.from_url(redis_url))
    assert (await reader.refresh()) is not None and reader.version == 1
    await redis_client.set(keys.CURRENT, 7)
    assert (await reader.refresh()).version == 1  # type: ignore[union-attr]
    assert "v7 is missing" in reader.last_error
    await redis_client.set(keys.version_key(8), json.dumps({"format": 1}))
    await redis_client.set(keys.CURRENT, 8)
    assert (await reader.refresh()).version == 1  # type: ignore[union-attr]
    assert "malformed menu set" in reader.last_error
    await reader.client.aclose()


async def test_readme_sql_example_is_a_valid_menu(pg_pool: asyncpg.Pool) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Writing a menu", 1)[1]
    sql = section.split("```sql", 1)[1].split("```", 1)[0]
    await pg_pool.execute(sql)
    ms = compile_menuset(await load_source(pg_pool))
    flow = ms.flow_for("9999")
    assert flow is not None
    cmds = flow.start(CallInfo("c", "test", "+15550100", "9999"))
    play = next(c for c in cmds if isinstance(c, Play))
    assert play.prompts[1] == Prompt("tts", "Hello +15550100. For sales press 1, support 2.")
    assert ms.menus["main"].by_digits["2"].action.priority == 5


async def test_reloader_listens_again_after_losing_its_connection(
    reloader: MenuReloader, seeded: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    before = await live_version(redis_client)
    listener = reloader._listener
    assert listener is not None
    await seeded.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
    # Edited while nobody listens: picked up by the full reload after reconnecting.
    await seeded.execute("UPDATE ivr_menu_options SET digits = '7' WHERE digits = '2'")

    async def bumped() -> bool:
        return await live_version(redis_client) > before

    await wait_until(bumped, 5.0)
    assert reloader._listener is not listener
    assert (
        "7"
        in (await stored(redis_client, await live_version(redis_client))).menus["main"].by_digits
    )
    # And the new connection hears NOTIFY again.
    second = await live_version(redis_client)
    await seeded.execute("UPDATE ivr_menu_options SET digits = '8' WHERE digits = '7'")

    async def bumped_again() -> bool:
        return await live_version(redis_client) > second

    await wait_until(bumped_again, 1.0)
