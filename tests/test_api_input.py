"""Hostile and clumsy input to the HTTP API: answered with a 4xx naming the problem, never a
500, never echoing huge inputs back (findings of the hardening review against `callyard
api` / `callyard dev`)."""

from __future__ import annotations

import logging

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
