"""Menu history for every edit: REST and SQL edits become versions naming who made them,
recorded once by the reloader (however many run), never for an invalid edit, never twice
for an editor's publish; any version can be rolled back to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from api_support import api_app
from test_api_menu_drafts import MAIN, SALES, _seed

from appserver.api.admin_routes import menu_out
from appserver.menus import keys
from appserver.menus.changes import menu_body
from appserver.menus.history import MENU_WRITE_LOCK
from appserver.menus.reloader import MenuReloader
from appserver.store.menus import get_menu, list_menus


@contextlib.asynccontextmanager
async def _reloaders(pool: asyncpg.Pool, dsn: str, redis: aioredis.Redis, n: int = 1,
                     debounce: float = 0.05, **more: Any) -> AsyncIterator[list[MenuReloader]]:
    """``n`` reloaders as n API processes run them: the first on the pool, the others on
    connections of their own."""
    running = [MenuReloader(dsn, redis, pool=pool if i == 0 else None, debounce=debounce,
                            **more) for i in range(n)]
    try:
        for r in running:
            await r.start()
        yield running
    finally:
        for r in running:
            await r.stop()


async def _versions(c: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await c.get("/api/menu-versions")
    assert r.status_code == 200, r.text
    return list(r.json())


async def _next_version(c: httpx.AsyncClient, count: int, timeout: float = 3.0
                        ) -> list[dict[str, Any]]:
    """The history once it has ``count`` versions, checked to stay so for a while (no
    second reloader adds one late)."""
    t0 = time.monotonic()
    while len(listed := await _versions(c)) < count:
        assert time.monotonic() - t0 < timeout, f"still {len(listed)} versions: {listed}"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.4)  # every reloader has reloaded (debounce 0.05 s) meanwhile
    listed = await _versions(c)
    assert len(listed) == count, listed
    return listed


async def _sql_edit(dsn: str, statement: str, application_name: str = "") -> str:
    """Run ``statement`` on a plain client connection, as psql would (not Callyard's own);
    the SQL user it ran as."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": application_name})
    try:
        await conn.execute(statement)
        return str(await conn.fetchval("SELECT session_user"))
    finally:
        await conn.close()


async def _live_version(redis: aioredis.Redis) -> int:
    return int(await redis.get(keys.CURRENT))


async def _until_published(redis: aioredis.Redis, before: int) -> None:
    t0 = time.monotonic()
    while await _live_version(redis) == before:
        assert time.monotonic() - t0 < 3, "not published to Redis"
        await asyncio.sleep(0.02)


async def test_a_rest_edit_is_a_version_naming_the_api_principal(
        pg_pool, pg_dsn, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client):
            [baseline] = await _next_version(c, 1)
            assert (baseline["action"], baseline["published_by"]) == ("baseline", "initial")
            assert [(x["menu"], x["change"]) for x in baseline["changes"]] == \
                [("main", "added"), ("sales", "added")]
            async with api.client(await api.token("admin1")) as alice:
                r = await alice.put("/api/menus/main", json={**MAIN, "greeting": ["tts:Hi"]})
                assert r.status_code == 200, r.text
            edit, _ = await _next_version(c, 2)
            assert (edit["action"], edit["published_by"]) == ("edit", "admin1")
            assert edit["changes"] == [{"menu": "main", "change": "changed", "options": [],
                                        "fields": {"greeting": [["tts:Welcome"], ["tts:Hi"]]}}]
            full = (await c.get(f"/api/menu-versions/{edit['id']}")).json()
            assert full["menus"]["main"]["greeting"] == ["tts:Hi"]
            # An API key is named as such; a refused write is no version; a delete is one.
            assert (await c.delete("/api/menus/sales")).status_code == 409  # main uses it
            r = await c.put("/api/menus/main", json={**MAIN, "options": MAIN["options"][:1]})
            assert r.status_code == 200, r.text
            assert (await _next_version(c, 3))[0]["published_by"] == "key:automation"
            assert (await c.delete("/api/menus/sales")).status_code == 204
            deleted = (await _next_version(c, 4))[0]
            assert (deleted["published_by"], deleted["changes"]) == \
                ("key:automation", [{"menu": "sales", "change": "removed"}])
        # The log of edits is folded into the versions, not kept growing.
        assert await pg_pool.fetchval("SELECT count(*) FROM menu_edits") == 0


async def test_a_sql_edit_is_a_version_naming_the_sql_user(pg_pool, pg_dsn, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client):
            await _next_version(c, 1)
            user = await _sql_edit(pg_dsn, "UPDATE ivr_menu_options SET target = 'support:5'"
                                           " WHERE digits = '1'")
            edit, _ = await _next_version(c, 2)
            assert (edit["action"], edit["published_by"]) == ("edit", f"sql:{user}")
            [change] = edit["changes"]
            assert change["menu"] == "main" and change["fields"] == {}
            assert [(o["digits"], o["before"]["target"], o["after"]["target"])
                    for o in change["options"]] == [("1", "support", "support:5")]
            # psql names itself: the version says so.
            await _sql_edit(pg_dsn, "UPDATE ivr_menus SET greeting = '{tts:Psql}'"
                                    " WHERE name = 'sales'", application_name="psql")
            edit2, *_ = await _next_version(c, 3)
            assert edit2["published_by"] == f"sql:{user} (psql)"


async def test_an_invalid_sql_edit_records_no_version(pg_pool, pg_dsn, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client) as [reloader]:
            await _next_version(c, 1)
            live = await _live_version(redis_client)
            await _sql_edit(pg_dsn, "UPDATE ivr_menu_options SET target = 'ghost'"
                                    " WHERE digits = '2'")
            t0 = time.monotonic()
            while "ghost" not in reloader.last_error:
                assert time.monotonic() - t0 < 3, "the edit was not rejected"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert [v["action"] for v in await _versions(c)] == ["baseline"]
            assert await _live_version(redis_client) == live
            # Fixed the same way it was broken: back to the recorded set, no version.
            await _sql_edit(pg_dsn, "UPDATE ivr_menu_options SET target = 'sales'"
                                    " WHERE digits = '2'")
            t0 = time.monotonic()
            while reloader.last_error:
                assert time.monotonic() - t0 < 3, "the fix was not reloaded"
                await asyncio.sleep(0.02)
            await _next_version(c, 1)
            assert await pg_pool.fetchval("SELECT count(*) FROM menu_edits") == 0


async def _publish(c: httpx.AsyncClient, name: str, menu: dict[str, Any]) -> dict[str, Any]:
    state = {m["name"]: m for m in (await c.get("/api/menu-drafts")).json()["menus"]}
    r = await c.put(f"/api/menu-drafts/{name}", json={
        "revision": 0, "base": state[name]["live_digest"], "menu": menu})
    assert r.status_code == 200, r.text
    r = await c.post("/api/menu-drafts/publish", json={
        "revisions": {name: r.json()["draft"]["revision"]}})
    assert r.status_code == 200, r.text
    return dict(r.json()["version"])


async def test_an_editor_publish_is_one_version_not_two(pg_pool, pg_dsn, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client, n=2):
            await _next_version(c, 1)
            live = await _live_version(redis_client)
            # Options listed out of their stored order: the version records the menus as
            # written (what the reloader reads back), so it finds nothing more to record.
            reordered = {**MAIN, "options": [MAIN["options"][1], MAIN["options"][0]]}
            published = await _publish(c, "main", {**reordered, "greeting": ["tts:New"]})
            await _until_published(redis_client, live)
            listed = await _next_version(c, 2)
            assert [(v["id"], v["action"]) for v in listed] == \
                [(published["id"], "publish"), (listed[1]["id"], "baseline")]
            assert [o["digits"] for o in published["changes"][0]["options"]] == []
            assert await pg_pool.fetchval("SELECT count(*) FROM menu_edits") == 0
        # With no reloader running, a REST edit is recorded by the publish that follows it,
        # before its own version (which then shows only its own change).
        r = await c.put("/api/menus/sales", json={**SALES, "greeting": ["tts:Rest"]})
        assert r.status_code == 200, r.text
        published = await _publish(c, "main", MAIN)
        listed = await _versions(c)
        assert [(v["action"], v["published_by"]) for v in listed[:2]] == \
            [("publish", "key:automation"), ("edit", "key:automation")]
        assert [x["menu"] for x in listed[1]["changes"]] == ["sales"]
        assert [x["menu"] for x in published["changes"]] == ["main"]
        async with _reloaders(pg_pool, pg_dsn, redis_client):
            await _next_version(c, 4)


async def test_two_reloaders_record_each_edit_once(pg_pool, pg_dsn, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        # Reloads come when the test says (NOTIFY's reload only after the test).
        async with _reloaders(pg_pool, pg_dsn, redis_client, n=2, debounce=30) as running:
            await _next_version(c, 1)
            blocker = await asyncpg.connect(pg_dsn)
            try:
                for n, greeting in enumerate(["tts:A", "tts:B", "tts:C"], start=2):
                    live = await _live_version(redis_client)
                    r = await c.put("/api/menus/sales", json={**SALES, "greeting": [greeting]})
                    assert r.status_code == 200, r.text
                    # A menu write in progress holds the history: both reloaders still
                    # publish to Redis, then record together once it is done.
                    async with blocker.transaction():
                        await blocker.execute("SELECT pg_advisory_xact_lock($1)",
                                              MENU_WRITE_LOCK)
                        both = asyncio.gather(*(x.reload() for x in running))
                        await _until_published(redis_client, live)
                        await asyncio.sleep(0.2)
                        assert len(await _versions(c)) == n - 1
                    assert await both == [True, True]
                    assert (await _next_version(c, n))[0]["changes"][0]["fields"][
                        "greeting"][1] == [greeting]
            finally:
                await blocker.close()


async def test_roll_back_to_an_edit_version(pg_pool, pg_dsn, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client):
            await _next_version(c, 1)
            await _sql_edit(pg_dsn, "UPDATE ivr_menus SET greeting = '{tts:By hand}'"
                                    " WHERE name = 'main'")
            edit = (await _next_version(c, 2))[0]
            r = await c.put("/api/menus/main", json={**MAIN, "greeting": ["tts:Later"]})
            assert r.status_code == 200, r.text
            await _next_version(c, 3)
            live = await _live_version(redis_client)
            r = await c.post(f"/api/menu-versions/{edit['id']}/rollback", json={"note": "back"})
            assert r.status_code == 200, r.text
            back = r.json()["version"]
            assert (back["action"], back["rollback_of"]) == ("rollback", edit["id"])
            assert back["changes"][0]["fields"] == {
                "greeting": [["tts:Later"], ["tts:By hand"]]}
            assert (await get_menu(pg_pool, "main")).greeting == ("tts:By hand",)
            await _until_published(redis_client, live)
            assert [v["action"] for v in await _next_version(c, 4)] == \
                ["rollback", "edit", "edit", "baseline"]


async def test_menu_bodies_are_the_rest_api_view(pg_pool, redis_client) -> None:
    """What versions and drafts compare is the menu as GET /api/menus shows it."""
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        assert (await c.put("/api/schedules/office", json={"timezone": "Europe/Paris"})
                ).status_code == 200
        odd = {**MAIN, "invalid_prompt": ["tts:Again"], "first_digit_timeout": 2.5,
               "schedule": "office", "closed_action": "hangup",
               "options": [{**MAIN["options"][0], "prompt": ["tts:One"], "position": 3}]}
        assert (await c.put("/api/menus/main", json=odd)).status_code == 200, odd
        for menu in await list_menus(pg_pool):
            assert menu_body(menu) == menu_out(menu).model_dump(
                mode="json", exclude={"name", "updated_at"})


async def test_an_edit_callers_cannot_hear_is_recorded_too(pg_pool, pg_dsn, redis_client) -> None:
    """A description is not compiled (Redis keeps its version) but is part of the menu."""
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client):
            await _next_version(c, 1)
            live = await _live_version(redis_client)
            r = await c.put("/api/menus/sales", json={**SALES, "description": "for buyers"})
            assert r.status_code == 200, r.text
            edit = (await _next_version(c, 2))[0]
            assert edit["changes"][0]["fields"] == {"description": ["", "for buyers"]}
            assert await _live_version(redis_client) == live


async def test_a_failure_to_record_does_not_hold_up_publishing(
        pg_pool, pg_dsn, redis_client, caplog) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client) as [reloader]:
            await _next_version(c, 1)
            live = await _live_version(redis_client)
            await pg_pool.execute("ALTER TABLE menu_versions ADD CONSTRAINT refuse_all"
                                  " CHECK (false) NOT VALID")
            user = await _sql_edit(pg_dsn, "UPDATE ivr_menus SET greeting = '{tts:Still live}'"
                                           " WHERE name = 'sales'")
            await _until_published(redis_client, live)
            t0 = time.monotonic()
            while "menu version not recorded; retrying at the next reload" not in caplog.text:
                assert time.monotonic() - t0 < 3, "no error logged"
                await asyncio.sleep(0.02)
            assert len(await _versions(c)) == 1
            await pg_pool.execute("ALTER TABLE menu_versions DROP CONSTRAINT refuse_all")
            assert await reloader.reload() is True  # the next reload (or the minute's resync)
            edit = (await _next_version(c, 2))[0]
            assert (edit["published_by"], edit["changes"][0]["menu"]) == (f"sql:{user}", "sales")


async def test_a_stuck_menu_write_does_not_stop_publishing(pg_pool, pg_dsn, redis_client) -> None:
    """Recording waits a bounded time for a menu write in progress; the edits that follow
    are still published, and recorded once the write is over."""
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with _reloaders(pg_pool, pg_dsn, redis_client,
                              history_lock_wait=0.3) as [reloader]:
            await _next_version(c, 1)
            stuck = await asyncpg.connect(pg_dsn)
            try:
                async with stuck.transaction():
                    await stuck.execute("SELECT pg_advisory_xact_lock($1)", MENU_WRITE_LOCK)
                    for greeting in ("tts:One", "tts:Two"):
                        live = await _live_version(redis_client)
                        user = await _sql_edit(pg_dsn, "UPDATE ivr_menus SET greeting ="
                                               f" '{{{greeting}}}' WHERE name = 'sales'")
                        await _until_published(redis_client, live)
                    # the last edit's recording runs after its publish and waits up to 0.3 s
                    # for this lock: let it give up before the write ends (when this ran in
                    # that window it recorded the edit itself: seen once in a full run)
                    await asyncio.sleep(0.3 * 3)
                    assert len(await _versions(c)) == 1
            finally:
                await stuck.close()
            # The next reload (here the minute's resync, called now) records both at once.
            assert len(await _versions(c)) == 1
            assert await reloader.reload() is True
            edit = (await _next_version(c, 2))[0]
            assert (edit["published_by"], edit["changes"][0]["fields"]) == \
                (f"sql:{user}", {"greeting": [["tts:Sales"], ["tts:Two"]]})
