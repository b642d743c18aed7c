"""Admin REST API: CRUD through the repositories, menu validation, limits, CDR search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_support import api_app

from appserver.store.cdrs import Cdr, insert_cdrs
from appserver.store.menus import list_menus

MAIN = {
    "greeting": ["tts:Welcome"],
    "options": [
        {"digits": "1", "action": "enqueue", "target": "support"},
        {"digits": "2", "action": "submenu", "target": "sales"},
    ],
}


async def test_configure_a_whole_ivr(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        assert (await c.put("/api/queues/support", json={"wrapup_seconds": 5})).status_code == 200
        r = await c.put("/api/menus/sales", json={"greeting": ["tts:Sales"],
                                                   "options": [{"digits": "*", "action": "back"}]})
        assert r.status_code == 200, r.text
        r = await c.put("/api/menus/main", json=MAIN)
        assert r.status_code == 200, r.text
        assert [o["digits"] for o in r.json()["options"]] == ["1", "2"]
        r = await c.put("/api/extensions/9999", json={"kind": "menu", "target": "main"})
        assert r.status_code == 200, r.text
        r = await c.put("/api/agents/carol", json={"display_name": "Carol", "password": "x" * 10})
        assert r.status_code == 200 and r.json()["has_password"] is True
        assert "password_hash" not in r.text and "argon2" not in r.text
        r = await c.put("/api/queues/support/members/carol", json={"tier": 2, "penalty": 5})
        assert r.status_code == 200
        members = (await c.get("/api/queues/support/members")).json()
        assert [(m["agent"], m["tier"], m["penalty"]) for m in members] == [("carol", 2, 5)]
        r = await c.put("/api/schedules/office", json={
            "timezone": "Europe/Paris",
            "hours": [{"weekday": 0, "opens": "09:00", "closes": "17:00"}],
            "closures": [{"name": "New year", "starts_on": "2027-01-01", "ends_on": "2027-01-01"}],
        })
        assert r.status_code == 200, r.text
        assert (await c.get("/api/menus/main")).json()["options"][0]["target"] == "support"
        # Deleting what the menus use is refused and changes nothing.
        r = await c.delete("/api/menus/sales")
        assert r.status_code == 409 and "sales" in r.text
        assert (await c.delete("/api/queues/support/members/carol")).status_code == 204
        assert (await c.delete("/api/queues/support/members/carol")).status_code == 404
        assert (await c.get("/api/menus/nope")).status_code == 404


async def test_bad_menu_is_422_naming_field_and_nothing_is_saved(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await c.put("/api/queues/support", json={})
        assert (await c.put("/api/menus/main", json={"options": MAIN["options"][:1]})).status_code \
            == 200
        before = await list_menus(pg_pool)
        bad = {"greeting": ["tts:Hi"], "options": [
            {"digits": "1", "action": "enqueue", "target": "support"},
            {"digits": "2", "action": "submenu", "target": "missing-menu"},
        ]}
        r = await c.put("/api/menus/main", json=bad)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail[0]["loc"] == ["body", "options", 1]
        assert detail[0]["option"] == "2" and "missing-menu" in detail[0]["msg"]
        assert await list_menus(pg_pool) == before
        # Schema limits: every field has one.
        for body in ({"max_digits": 21}, {"first_digit_timeout": 0.1},
                     {"greeting": ["say:hi"]}, {"options": [{"digits": "1x", "action": "hangup"}]},
                     {"description": "d" * 1001}, {"unknown": 1},
                     {"options": [{"digits": "1", "action": "hangup"}] * 2}):
            r = await c.put("/api/menus/main", json=body)
            assert r.status_code == 422, (body, r.text)
        assert await list_menus(pg_pool) == before
        assert (await c.put("/api/menus/Bad Name", json={})).status_code == 422


async def test_database_rules_come_back_as_4xx(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        r = await c.put("/api/schedules/x", json={"timezone": "Mars/Olympus"})
        assert r.status_code == 422
        r = await c.put("/api/extensions/100", json={"kind": "queue", "target": "nope"})
        assert r.status_code == 422 and "nope" in r.text
        r = await c.put("/api/agents/dave", json={"display_name": "Dave", "kind": "sip"})
        assert r.status_code == 422 and "extension" in r.text
        await c.put("/api/agents/dave", json={"display_name": "Dave", "extension": "2001"})
        r = await c.put("/api/agents/erin", json={"display_name": "Erin", "extension": "2001"})
        assert r.status_code == 409
        assert (await c.put("/api/queues/q/members/ghost", json={})).status_code == 422


async def test_cdr_search_filters_and_pages(pg_pool, redis_client) -> None:
    t0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
    await insert_cdrs(pg_pool, [
        Cdr(f"c{i}", "asterisk", t0 + timedelta(minutes=i), caller=f"+1555{i % 2}",
            queue="support", agent="alice" if i % 3 == 0 else None,
            disposition="answered" if i % 3 == 0 else "abandoned")
        for i in range(25)
    ])
    async with api_app(pg_pool, redis_client) as api:
        token = await api.token("super1")
        async with api.client(token) as c:
            r = await c.get("/api/cdrs", params={"limit": 10, "offset": 20})
            page = r.json()
            assert page["total"] == 25 and [x["call_id"] for x in page["items"]] == \
                ["c4", "c3", "c2", "c1", "c0"]
            r = await c.get("/api/cdrs", params={"agent": "alice", "caller": "+15550"})
            assert {x["call_id"] for x in r.json()["items"]} == {"c0", "c6", "c12", "c18", "c24"}
            r = await c.get("/api/cdrs", params={"since": "2026-05-01T12:10:00Z",
                                                 "until": "2026-05-01T12:12:00Z"})
            assert [x["call_id"] for x in r.json()["items"]] == ["c11", "c10"]
            for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1},
                        {"since": "2026-05-01T12:00:00"}, {"caller": "x" * 65}):
                assert (await c.get("/api/cdrs", params=bad)).status_code == 422, bad


async def test_menu_status_and_queue_stats(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        status = (await c.get("/api/menus/status")).json()
        assert status["version"] is None and status["errors"] == []
        assert (await c.get("/api/stats/queues")).json() == []
        assert (await c.get("/api/stats/queues/none")).status_code == 404
        assert (await c.get("/api/calls")).json() == []
