"""Menu drafts, validation, publication, history and rollback (the admin UI's backend)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import redis.asyncio as aioredis
from api_support import api_app

from appserver.menus import keys
from appserver.menus.reloader import MenuReloader
from appserver.store.menus import get_menu, list_menus
from ivr.compile import MenuSet

MAIN = {"greeting": ["tts:Welcome"], "options": [
    {"digits": "1", "action": "enqueue", "target": "support"},
    {"digits": "2", "action": "submenu", "target": "sales"}]}
SALES = {"greeting": ["tts:Sales"], "options": [{"digits": "*", "action": "back"}]}


async def _seed(c: httpx.AsyncClient) -> None:
    assert (await c.put("/api/queues/support", json={})).status_code == 200
    assert (await c.put("/api/menus/sales", json=SALES)).status_code == 200
    assert (await c.put("/api/menus/main", json=MAIN)).status_code == 200
    assert (await c.put("/api/extensions/9999", json={"kind": "menu", "target": "main"})
            ).status_code == 200


async def _state(c: httpx.AsyncClient) -> dict[str, Any]:
    r = await c.get("/api/menu-drafts")
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()["menus"]}


async def _draft(c: httpx.AsyncClient, name: str, menu: dict[str, Any] | None,
                 revision: int | None = None) -> httpx.Response:
    entry = (await _state(c)).get(name)
    if revision is None:
        revision = entry["draft"]["revision"] if entry and entry["draft"] else 0
    base = entry["live_digest"] if entry and revision == 0 else None
    return await c.put(f"/api/menu-drafts/{name}",
                       json={"revision": revision, "base": base, "menu": menu})


async def _publish(c: httpx.AsyncClient, note: str = "") -> httpx.Response:
    revisions = {n: m["draft"]["revision"] for n, m in (await _state(c)).items() if m["draft"]}
    return await c.post("/api/menu-drafts/publish", json={"revisions": revisions, "note": note})


async def test_validate_returns_every_error_with_menu_option_and_field(pg_pool, redis_client
                                                                       ) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        before = await list_menus(pg_pool)
        candidate = {
            "main": {**MAIN, "options": [
                {"digits": "1", "action": "enqueue", "target": "nosuchqueue"},
                {"digits": "2", "action": "submenu", "target": "ghost"},
                {"digits": "3", "action": "transfer", "target": "bad target!"}]},
            "sales": {**SALES, "greeting": ["say:hello"], "max_digits": 99},
        }
        r = await c.post("/api/menu-drafts/validate", json={"menus": candidate})
        assert r.status_code == 200, r.text
        assert r.json()["valid"] is False
        found = {(i["menu"], i["option"], i["field"]) for i in r.json()["issues"]
                 if i["severity"] == "error"}
        assert found >= {("main", "1", "target"), ("main", "2", "target"),
                         ("main", "3", "target"), ("sales", None, "greeting"),
                         ("sales", None, "max_digits")}, found
        dangling = next(i for i in r.json()["issues"] if i["option"] == "2")
        assert "'ghost' does not exist" in dangling["message"]
        # One error per field: the schema's, not the validator's again.
        assert len([i for i in r.json()["issues"] if i["option"] == "3"]) == 1
        # A valid candidate; deleting a menu an option uses is an error on that option.
        r = await c.post("/api/menu-drafts/validate", json={"menus": {"main": MAIN}})
        assert r.json()["valid"] is True, r.text
        r = await c.post("/api/menu-drafts/validate", json={"menus": {"sales": None}})
        assert [(i["menu"], i["option"], i["field"]) for i in r.json()["issues"]
                if i["severity"] == "error"] == [("main", "2", "target")]
        # Values of the wrong type are errors on their fields, not a server error.
        odd = {"main": {"language": 5, "exhausted_action": "submenu", "exhausted_target": 7,
                        "max_digits": "two", "options": [{"digits": 1, "target": 3}, "x"]}}
        r = await c.post("/api/menu-drafts/validate", json={"menus": odd})
        assert r.status_code == 200, r.text
        fields = {(i["option"], i["field"]) for i in r.json()["issues"]}
        assert {(None, "language"), (None, "exhausted_target"), (None, "max_digits"),
                ("1", "action")} <= fields, fields
        assert await list_menus(pg_pool) == before


async def test_a_draft_is_not_live_until_published_through_the_sql_path(
        pg_pool, pg_dsn, redis_client: aioredis.Redis) -> None:
    reloader = MenuReloader(pg_dsn, redis_client, pool=pg_pool, debounce=0.05)
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        await reloader.start()
        try:
            live = int(await redis_client.get(keys.CURRENT))
            r = await _draft(c, "main", {**MAIN, "greeting": ["tts:Hello from the draft"]})
            assert r.status_code == 200, r.text
            assert r.json()["issues"] == [] and r.json()["draft"]["revision"] > 0
            await asyncio.sleep(0.3)  # nothing for the reloader to publish
            assert int(await redis_client.get(keys.CURRENT)) == live
            assert (await get_menu(pg_pool, "main")).greeting == ("tts:Welcome",)
            assert (await _state(c))["main"]["status"] == "changed"

            r = await _publish(c, "new greeting")
            assert r.status_code == 200, r.text
            version = r.json()["version"]
            assert version["published_by"] == "key:automation" and version["note"] == \
                "new greeting"
            assert version["changes"] == [{"menu": "main", "change": "changed", "options": [],
                                           "fields": {"greeting": [["tts:Welcome"],
                                                                   ["tts:Hello from the draft"]]}}]
            t0 = time.monotonic()  # NOTIFY -> reloader -> compile -> new Redis version
            while int(await redis_client.get(keys.CURRENT)) == live:
                assert time.monotonic() - t0 < 3, "not published to Redis"
                await asyncio.sleep(0.02)
            doc = await redis_client.get(keys.version_key(live + 1))
            assert MenuSet.from_json(doc).menus["main"].greeting[0].value == \
                "Hello from the draft"
            state = await c.get("/api/menu-drafts")
            assert state.json()["status"]["version"] == live + 1
            assert all(m["draft"] is None for m in state.json()["menus"])
            audit = (await c.get("/api/audit", params={"resource": "menu"})).json()
            assert audit[0]["name"] == "main" and audit[0]["actor"] == "key:automation"
        finally:
            await reloader.stop()


async def test_publish_refuses_an_invalid_set_naming_what_is_wrong(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        before = await list_menus(pg_pool)
        bad = {**MAIN, "options": [*MAIN["options"],
                                   {"digits": "3", "action": "submenu", "target": "billing"}]}
        r = await _draft(c, "main", bad)  # a draft may be invalid (billing comes next) ...
        assert r.status_code == 200
        assert [(i["option"], i["field"]) for i in r.json()["issues"]] == [("3", "target")]
        r = await _publish(c)  # ... but is not published
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "billing" in detail["message"]
        assert [(i["menu"], i["option"], i["field"]) for i in detail["issues"]] == \
            [("main", "3", "target")]
        assert await list_menus(pg_pool) == before
        # The missing menu drafted too: both go live together.
        assert (await _draft(c, "billing", {"greeting": ["tts:Billing"]})).status_code == 200
        assert (await _state(c))["billing"]["status"] == "new"
        r = await _publish(c)
        assert r.status_code == 200, r.text
        assert [(x["menu"], x["change"]) for x in r.json()["version"]["changes"]] == \
            [("billing", "added"), ("main", "changed")]
        assert [o.digits for o in (await get_menu(pg_pool, "main")).options] == ["1", "2", "3"]
        assert (await _publish(c)).status_code == 422  # nothing left to publish
        r = await _draft(c, "never", None)  # deleting what is not live: discard instead
        assert r.status_code == 404 and "discard" in r.text


async def test_concurrent_edits_get_a_clear_conflict(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as alice:
        await _seed(alice)
        bob_token = await api.token("admin1")
        async with api.client(bob_token) as bob:
            opened = await _state(alice)  # both open the editor on the live menus
            both = {"revision": 0, "base": opened["main"]["live_digest"]}
            r = await alice.put("/api/menu-drafts/main", json={**both, "menu": SALES})
            assert r.status_code == 200
            first = r.json()["draft"]["revision"]
            r = await bob.put("/api/menu-drafts/main", json={**both, "menu": MAIN})
            assert r.status_code == 409
            assert "saved meanwhile by key:automation" in r.json()["detail"]["message"]
            assert r.json()["detail"]["draft"]["menu"]["greeting"] == ["tts:Sales"]
            # Bob reloads and saves on top; Alice's next save with her old revision conflicts.
            r = await bob.put("/api/menu-drafts/main", json={"revision": first, "menu": MAIN})
            assert r.status_code == 200
            second = r.json()["draft"]["revision"]
            r = await alice.put("/api/menu-drafts/main", json={"revision": first, "menu": SALES})
            assert r.status_code == 409 and "admin1" in r.json()["detail"]["message"]
            # Publishing needs the revisions reviewed.
            r = await alice.post("/api/menu-drafts/publish",
                                 json={"revisions": {"main": first}})
            assert r.status_code == 409 and r.json()["detail"]["menus"] == ["main"]
            # Discard with a stale revision conflicts; with the current one it works.
            assert (await alice.delete("/api/menu-drafts/main",
                                       params={"revision": first})).status_code == 409
            assert (await alice.delete("/api/menu-drafts/main",
                                       params={"revision": second})).status_code == 204
            # A live edit (REST or SQL, even of an option alone) after the editor read the
            # menu: saving a draft of it conflicts, and so does publishing a draft started
            # before it.
            opened = await _state(alice)
            assert (await _draft(alice, "sales", {**SALES, "description": "d"})).status_code \
                == 200
            await pg_pool.execute("UPDATE ivr_menu_options SET position = 5")  # main's too
            r = await bob.put("/api/menu-drafts/main", json={
                "revision": 0, "base": opened["main"]["live_digest"], "menu": MAIN})
            assert r.status_code == 409 and "changed live" in r.json()["detail"]["message"]
            r = await _publish(alice)
            assert r.status_code == 409 and r.json()["detail"]["menus"] == ["sales"]
            assert [o.position for o in (await get_menu(pg_pool, "sales")).options] == [5]


async def test_history_diff_and_rollback(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        await _draft(c, "main", {**MAIN, "greeting": ["tts:One"]})
        first = (await _publish(c, "one")).json()["version"]
        await _draft(c, "main", {**MAIN, "greeting": ["tts:Two"],
                                 "options": MAIN["options"][:1]})
        await _draft(c, "sales", None)  # deleted: nothing uses it any more
        second = (await _publish(c, "two")).json()["version"]
        assert [(x["menu"], x["change"]) for x in second["changes"]] == \
            [("main", "changed"), ("sales", "removed")]
        main_change = second["changes"][0]
        assert main_change["fields"] == {"greeting": [["tts:One"], ["tts:Two"]]}
        assert main_change["options"] == [{"digits": "2", "after": None, "before": {
            "digits": "2", "action": "submenu", "target": "sales", "prompt": None,
            "position": 0}}]
        assert await get_menu(pg_pool, "sales") is None

        listed = (await c.get("/api/menu-versions")).json()
        assert [(v["id"], v["note"], v["published_by"]) for v in listed] == \
            [(second["id"], "two", "key:automation"), (first["id"], "one", "key:automation")]
        assert "menus" not in listed[0]
        full = (await c.get(f"/api/menu-versions/{first['id']}")).json()
        assert full["menus"]["main"]["greeting"] == ["tts:One"]

        r = await c.post(f"/api/menu-versions/{first['id']}/rollback", json={"note": "undo"})
        assert r.status_code == 200, r.text
        back = r.json()["version"]
        assert back["action"] == "rollback" and back["rollback_of"] == first["id"]
        assert [(x["menu"], x["change"]) for x in back["changes"]] == \
            [("main", "changed"), ("sales", "added")]
        assert (await get_menu(pg_pool, "main")).greeting == ("tts:One",)
        assert (await get_menu(pg_pool, "sales")).greeting == ("tts:Sales",)
        # A version that would be invalid today is refused with the reason.
        await c.put("/api/menus/main", json={"greeting": ["tts:Solo"]})
        await c.delete("/api/menus/sales")
        await c.delete("/api/queues/support")
        r = await c.post(f"/api/menu-versions/{first['id']}/rollback", json={})
        assert r.status_code == 422 and "support" in r.json()["detail"]["message"]
        assert (await get_menu(pg_pool, "main")).greeting == ("tts:Solo",)
        assert (await c.get("/api/menu-versions/999")).status_code == 404


async def test_supervisors_read_the_editor_but_cannot_change_it(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        async with api.client(await api.token("super1")) as sup:
            assert (await sup.get("/api/menu-drafts")).status_code == 200
            assert (await sup.get("/api/menu-versions")).status_code == 200
            r = await sup.put("/api/menu-drafts/main", json={"revision": 0, "menu": MAIN})
            assert r.status_code == 403
            assert (await sup.post("/api/menu-drafts/publish", json={"revisions": {}})
                    ).status_code == 403
            assert (await sup.post("/api/menu-drafts/validate", json={"menus": {}})
                    ).status_code == 403


async def test_try_a_draft_with_a_simulated_call(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        await _draft(c, "sales", {**SALES, "greeting": ["tts:Sales for {{ caller }}"]})
        unsaved = {"main": {**MAIN, "greeting": ["tts:Draft hello", "file:ivr/menu"],
                            "timeout_prompt": ["tts:Still there?"], "max_retries": 1}}

        async def trial(steps: list[str], menus: dict[str, Any] = unsaved) -> dict[str, Any]:
            r = await c.post("/api/menu-drafts/try",
                             json={"menu": "main", "menus": menus, "steps": steps})
            assert r.status_code == 200, r.text
            return r.json()

        heard = await trial([])
        assert [(e["kind"], e["text"]) for e in heard["transcript"]] == [
            ("heard", "Draft hello"), ("heard", "[recording ivr/menu]")]
        assert heard["state"] == "listening" and heard["menu"] == "main"
        # Into the saved draft of sales (the template rendered), back, then the queue.
        walk = await trial(["2", "*", "1"])
        texts = [e["text"] for e in walk["transcript"]]
        assert texts[2:5] == ["2", "Sales for +15550100", "*"]
        assert walk["state"] == "queued" and texts[-1].startswith("handed to queue support")
        # Silence: the timeout prompt, the greeting again, then (retries exhausted) hangup.
        quiet = await trial(["silence", "silence", "silence"])
        assert [e["text"] for e in quiet["transcript"]][2:4] == ["(caller stays silent)",
                                                                 "Still there?"]
        assert quiet["state"] == "ended"
        # Nothing live changed; an invalid set cannot be tried.
        assert (await get_menu(pg_pool, "main")).greeting == ("tts:Welcome",)
        bad = {"main": {**MAIN, "options": [{"digits": "1", "action": "submenu",
                                             "target": "ghost"}]}}
        r = await c.post("/api/menu-drafts/try", json={"menu": "main", "menus": bad, "steps": []})
        assert r.status_code == 422 and "ghost" in r.json()["detail"]["message"]
        r = await c.post("/api/menu-drafts/try", json={"menu": "nope", "steps": []})
        assert r.status_code == 404
