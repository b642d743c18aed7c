"""Hostile and clumsy input to the HTTP API: answered with a 4xx naming the problem, never a
500, never echoing huge inputs back (findings of the hardening review against `callyard
api` / `callyard dev`)."""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import pytest
from api_support import api_app

JSON = {"content-type": "application/json"}


async def test_nan_and_infinity_are_422_not_500_even_unauthenticated(
    pg_pool, redis_client, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding: `{"username": NaN}` on /api/auth/login (and NaN/Infinity anywhere) answered
    500 with a traceback in the log: the 422 echoed the NaN, which JSON cannot carry."""
    async with api_app(pg_pool, redis_client) as api:
        async with api.client() as anonymous:
            for body in (b'{"username": NaN, "password": "x"}',
                         b'{"username": "a", "password": Infinity}',
                         b'{"username": "a", "password": -Infinity}'):
                r = await anonymous.post("/api/auth/login", content=body, headers=JSON)
                assert r.status_code == 422, (body, r.text)
                assert "NaN" not in r.text and "Infinity" not in r.text
        async with api.client(api.admin_key) as c:
            r = await c.put("/api/menus/main", content=b'{"first_digit_timeout": NaN}',
                            headers=JSON)
            assert r.status_code == 422 and "first_digit_timeout" in r.text
            r = await c.put("/api/queues/q", content=b'{"required_skills": {"x": Infinity}}',
                            headers=JSON)
            assert r.status_code == 422 and "required_skills" in r.text
    assert [x for x in caplog.records if x.levelno >= logging.ERROR] == []


async def test_a_422_does_not_echo_a_huge_input(pg_pool, redis_client) -> None:
    """Finding: a 5 MB description came back whole inside the 422."""
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        r = await c.put("/api/menus/main", json={"description": "d" * 500_000})
        assert r.status_code == 422 and "description" in r.text
        assert len(r.content) < 2000, len(r.content)
        r = await c.put("/api/queues/q", json={"required_skills": {"k" * 100_000: 1}})
        assert r.status_code == 422 and len(r.content) < 2000, len(r.content)


async def test_request_bodies_are_bounded_413_above_the_limit(pg_pool, redis_client) -> None:
    """Finding: a 5 MB body was read and validated; now CALLYARD_API_MAX_BODY (1 MiB by
    default) bounds every request body, declared or streamed."""
    big = b'{"description": "' + b"x" * 5_000_000 + b'"}'
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        r = await c.put("/api/menus/main", content=big, headers=JSON)
        assert r.status_code == 413 and len(r.content) < 200

        async def chunks():  # no Content-Length: the limit counts what arrives
            for _ in range(50):
                yield b"x" * 100_000

        r = await c.put("/api/menus/main", content=chunks(), headers=JSON)
        assert r.status_code == 413
        assert (await c.put("/api/menus/main", json={"description": "fits"})).status_code == 200


async def test_the_body_limit_is_configured(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client, api_max_body=2048) as api, \
            api.client(api.admin_key) as c:
        assert (await c.put("/api/menus/main", json={"description": "d" * 400})).status_code \
            == 200
        r = await c.put("/api/menus/main", json={"description": "d" * 3000})
        assert r.status_code == 413


# Every shape the database accepts, at the limits of its constraints (migrations 001, 003).
LONG_TEXT = "Ünïcode ☎ line one\nline two " * 40  # 1000 characters, free text keeps newlines
ALL_PROMPTS = ["file:ivr/welcome", "file:de/ivr/x-1.v2.wav", "file: sub_dir/a ",
               "tts:Hello {{ caller }}", "tts:" + "t" * 996, "digits:0123*#", "number:-42",
               "silence:60000", "file:ivr/{{ language }}/hi", "digits:{{ digits }}",
               *[f"tts:{i}" for i in range(10)]]  # 20


def sql_text(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


AGENT_A = "(SELECT id FROM agents WHERE username = '" + "a" * 63 + "')"
DB_SHAPES = f"""
INSERT INTO schedules (name, timezone, description) VALUES
    ('{"s" * 63}', (SELECT name FROM pg_timezone_names ORDER BY length(name) DESC, name LIMIT 1),
     '{LONG_TEXT[:1000]}'),
    ('office', 'UTC', '');
INSERT INTO schedule_hours (schedule_id, weekday, opens, closes) VALUES
    (1, 0, '00:00', '24:00'), (1, 6, '23:59', '23:59:59.999999'), (2, 3, '09:00', '17:30');
INSERT INTO schedule_closures (schedule_id, name, starts_on, ends_on) VALUES
    (1, ' {"ä" * 98} ', '1900-01-01', '2999-12-31'), (2, 'x', '2026-12-25', '2026-12-25');
INSERT INTO queues (name, description, strategy, max_wait_seconds, max_length,
                    announce_interval, announce_position, announce_wait, moh_class,
                    wrapup_seconds, ring_timeout, max_no_answer, overflow_action,
                    overflow_target, join_when_empty, leave_when_empty, exit_key, exit_action,
                    exit_target, service_level_seconds, tier_widen_seconds, required_skills)
VALUES ('q-ext', '{LONG_TEXT[:1000]}', 'skills', 86400, 100000, 3600, false, false,
        '{"M" * 64}', 3600, 300, 100, 'extension', '{"+" * 32}', false, true, '#', 'extension',
        '*1', 3600, 3600, (SELECT jsonb_object_agg('s' || i, 1 + i % 10)
                           FROM generate_series(1, 50) AS i)),
       ('q-menu', '', 'ring_all', 1, 1, 10, true, true, 'default', 0, 5, 1, 'menu', 'main',
        true, false, '0', 'queue', 'q-ext', 1, 0, '{{}}'),
       ('q-queue', '', 'random', NULL, NULL, 0, true, true, 'a', 10, 20, 3, 'queue', 'q-menu',
        true, false, '*', 'hangup', NULL, 20, 30, '{{"english": 10}}'),
       ('q-hangup', '', 'fewest_calls', NULL, NULL, 30, true, true, 'default', 10, 20, 3,
        'hangup', NULL, true, false, NULL, NULL, NULL, 20, 30, '{{}}');
INSERT INTO agents (username, display_name, kind, extension, role, skills, enabled) VALUES
    ('{"a" * 63}', ' {"☎" * 98} ', 'sip', '{"9" * 16}', 'admin',
     (SELECT jsonb_object_agg('k' || i, 10) FROM generate_series(1, 50) AS i), false),
    ('b', 'B', 'browser', NULL, 'supervisor', '{{}}', true);
INSERT INTO queue_members (queue_id, agent_id, tier, penalty)
SELECT q.id, a.id, 1 + (q.id + a.id) % 9, (q.id * a.id * 37) % 101 FROM queues q, agents a;
INSERT INTO queue_members (queue_id, agent_id, tier, penalty) VALUES (1, {AGENT_A}, 9, 100)
    ON CONFLICT (queue_id, agent_id) DO UPDATE SET tier = 9, penalty = 100;
INSERT INTO ivr_menus (name, description, greeting, invalid_prompt, timeout_prompt,
                       first_digit_timeout, inter_digit_timeout, max_digits, terminator,
                       max_retries, exhausted_action, exhausted_target, schedule_id,
                       closed_action, closed_target, holiday_action, holiday_target, language)
VALUES ('main', '{LONG_TEXT[:1000]}', {sql_text(ALL_PROMPTS)}, '{{}}', NULL, 0.5, 30, 20,
        '', 10, 'transfer', '{"9" * 128}', 1, 'enqueue', 'q-ext:-999999', 'dial', '{"1" * 32}',
        'pt-BR'),
       ('{"m" * 63}', '', '{{}}', NULL, {sql_text(ALL_PROMPTS[:3])}, 60, 0.2, 1, '#', 0, 'play',
        NULL, NULL, NULL, NULL, NULL, NULL, 'en'),
       ('m-set', '', '{{}}', NULL, NULL, 5, 2, 1, '*', 3, 'set', 'x=', 2, 'repeat', NULL,
        'submenu', 'main', 'de');
INSERT INTO ivr_menu_options (menu_id, digits, action, target, prompt, position) VALUES
    (1, '1', 'submenu', '{"m" * 63}', NULL, 1000), (1, '2', 'back', NULL, '{{}}', 0),
    (1, '3', 'repeat', NULL, {sql_text(ALL_PROMPTS[3:6])}, 3), (1, '4', 'main', NULL, NULL, 4),
    (1, '5', 'enqueue', 'q-menu:999999', NULL, 5), (1, '6', 'dial', '*#+0', NULL, 6),
    (1, '7', 'transfer', 'sip:+1@x.example/a_b-c', NULL, 7),
    (1, '8', 'play', NULL, '{{"file:ivr/x"}}', 8),
    (1, '9', 'set', 'customer_tier={"v" * 114}', NULL, 9), (1, '*', 'set', 'a=', NULL, 10),
    (1, '*#0123456789*#012345', 'hangup', NULL, NULL, 11);
INSERT INTO extensions (number, kind, menu_id, queue_id, agent_id, dial_target, description)
VALUES ('{"1" * 32}', 'menu', 1, NULL, NULL, NULL, '{LONG_TEXT[:1000]}'),
       ('*#+', 'queue', NULL, 1, NULL, NULL, ''),
       ('100', 'agent', NULL, NULL, {AGENT_A}, NULL, ''),
       ('101', 'user', NULL, NULL, NULL, '{"u" * 128}', ''),
       ('102', 'user', NULL, NULL, NULL, 'sip:desk@10.0.0.1:5060/x_y-z+*#', '');
"""

ROUTES = {  # list route -> the item route (by the name field)
    "/api/schedules": ("/api/schedules/{}", "name"),
    "/api/queues": ("/api/queues/{}", "name"),
    "/api/agents": ("/api/agents/{}", "username"),
    "/api/menus": ("/api/menus/{}", "name"),
    "/api/extensions": ("/api/extensions/{}", "number"),
}


def _body(item: dict, drop: tuple[str, ...]) -> dict:
    return {k: v for k, v in item.items() if k not in drop}


async def test_every_row_the_database_accepts_reads_back_through_the_api(
    pg_pool, redis_client
) -> None:
    """Finding: rows the database accepts broke the API: a queue overflowing to an
    `extension` (valid in SQL and the README) made GET /api/queues 500, a menu description
    over 500 characters made GET /api/menus 500. Every config table is written here by SQL
    at the limits of its constraints, read back through the API, and written back through
    the API unchanged (one set of rules for both)."""
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await pg_pool.execute("DELETE FROM agents;" + DB_SHAPES)
        for list_route, (item_route, key) in ROUTES.items():
            r = await c.get(list_route)
            assert r.status_code == 200, (list_route, r.text[:300])
            assert r.json(), list_route
            for item in r.json():
                one = await c.get(item_route.format(quote(item[key], safe="")))
                assert one.status_code == 200 and one.json() == item, (item_route, item[key])
        members = [(await c.get(f"/api/queues/{q['name']}/members")).json()
                   for q in (await c.get("/api/queues")).json()]
        assert sum(len(m) for m in members) == 8 and {"tier": 9, "penalty": 100} in [
            {"tier": m["tier"], "penalty": m["penalty"]} for ms in members for m in ms]
        menu = (await c.get("/api/menus/main")).json()
        assert menu["greeting"] == ALL_PROMPTS and menu["description"] == LONG_TEXT[:1000]
        hours = (await c.get(f"/api/schedules/{'s' * 63}")).json()["hours"]
        assert hours[0] == {"weekday": 0, "opens": "00:00:00", "closes": "00:00:00"}

        # ... and every one of them is accepted back unchanged.
        for list_route, (item_route, key) in ROUTES.items():
            for item in (await c.get(list_route)).json():
                drop = (key, "updated_at", "created_at", "has_password", "username")
                route = item_route.format(quote(item[key], safe=""))
                r = await c.put(route, json=_body(item, drop))
                assert r.status_code == 200, (item_route, item[key], r.text[:500])
                assert (await c.get(route)).json() == {**item, "updated_at": r.json()["updated_at"]}
        for ms in members:
            for m in ms:
                r = await c.put(f"/api/queues/{m['queue']}/members/{m['agent']}",
                                json={"tier": m["tier"], "penalty": m["penalty"]})
                assert r.status_code == 200, r.text


async def test_the_api_offers_exactly_the_queue_routes_the_database_takes(
    pg_pool, redis_client
) -> None:
    """Finding: the API offered overflow `transfer`, which the database refuses, and not
    `extension`, which it takes."""
    candidates = ["hangup", "queue", "menu", "extension", "transfer", "voicemail", "agent"]
    accepted = {a for a in candidates
                if await pg_pool.fetchval("SELECT callyard_valid_route($1, NULL)"
                                          " OR callyard_valid_route($1, '100')", a)}
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        schema = (await c.get("/openapi.json")).json()["components"]["schemas"]
        offered = set(schema["QueueIn"]["properties"]["overflow_action"]["enum"])
        assert offered == accepted == {"hangup", "queue", "menu", "extension", "voicemail"}
        for body in ({"overflow_action": "transfer"}, {"overflow_action": "extension"},
                     {"overflow_action": "hangup", "overflow_target": "x"},
                     {"exit_key": "1"}, {"exit_action": "hangup"}, {"announce_interval": 5}):
            r = await c.put("/api/queues/q", json=body)
            assert r.status_code == 422 and "rejected by the database" not in r.text, r.text
        r = await c.put("/api/queues/q", json={"overflow_action": "extension",
                                               "overflow_target": "100", "exit_key": "#",
                                               "exit_action": "menu", "exit_target": "main"})
        assert r.status_code == 200, r.text


async def test_deleting_what_the_menus_use_is_409(pg_pool, redis_client) -> None:
    """Finding: the README promises 409 for a delete of something in use; the menu check
    answered 422."""
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        assert (await c.put("/api/queues/support", json={})).status_code == 200
        assert (await c.put("/api/menus/sales", json={"greeting": ["tts:Sales"]})).status_code \
            == 200
        r = await c.put("/api/menus/main", json={"greeting": ["tts:Hi"], "options": [
            {"digits": "1", "action": "submenu", "target": "sales"},
            {"digits": "2", "action": "enqueue", "target": "support"}]})
        assert r.status_code == 200, r.text
        for route in ("/api/menus/sales", "/api/queues/support"):
            r = await c.delete(route)
            assert r.status_code == 409, r.text
            assert r.json()["detail"][0]["type"] == "in_use" and "main" in r.text
            assert (await c.get(route)).status_code == 200


async def test_a_template_that_would_stall_the_workers_is_refused_at_once(
    pg_pool, redis_client
) -> None:
    """Finding: nested range(8000) loops in a prompt passed validation and took 1.6 s to
    save, blocking the API (then stalled every call of the worker that rendered them)."""
    nested = "tts:{% for i in range(8000) %}{% for j in range(8000) %}{% endfor %}{% endfor %}x"
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        started = time.perf_counter()
        r = await c.put("/api/menus/main", json={"greeting": [nested]})
        assert r.status_code == 422 and "loops may not be nested" in r.text, r.text
        assert time.perf_counter() - started < 0.5
