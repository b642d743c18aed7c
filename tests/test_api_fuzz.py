"""Schemathesis over /openapi.json with an admin API key: no request makes a 500.

The app runs in a real HTTP server on its own thread and event loop (schemathesis calls
it synchronously); every operation gets generated valid and invalid inputs.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import hypothesis
import pytest
import redis.asyncio as aioredis
import schemathesis
from api_support import API_SECRET, LK_KEY, LK_SECRET, livekit_stand_in, seed_people
from hypothesis import HealthCheck, given, settings

from appserver.api.app import create_app
from appserver.api.auth import create_api_key
from appserver.api.command import http_server
from appserver.api.context import ApiContext
from appserver.settings import load_settings
from appserver.store.db import create_pool

EXAMPLES = 25  # per operation; the whole run stays well under 30 s


@pytest.fixture
def served(pg_dsn: str, redis_url: str) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of the API served from another thread."""
    ready = threading.Event()
    out: dict[str, object] = {}

    async def main() -> None:
        pool = await create_pool(pg_dsn)
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        await seed_people(pool)
        _, key = await create_api_key(pool, "fuzz")
        async with livekit_stand_in() as lk:
            cfg = load_settings(livekit_url=lk.url, livekit_api_key=LK_KEY,
                                livekit_api_secret=LK_SECRET, api_secret=API_SECRET)
            ctx = await ApiContext.start(pool, redis, cfg)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = http_server(create_app(context=ctx), "127.0.0.1", port)
            out.update(server=server, base=f"http://127.0.0.1:{port}", key=key)
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.02)
            ready.set()
            await task
            await ctx.stop()
        await redis.aclose()
        await pool.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20), "API server did not start"
    yield str(out["base"]), str(out["key"])
    out["server"].should_exit = True  # type: ignore[attr-defined]
    thread.join(10)


def test_no_server_errors(served: tuple[str, str]) -> None:
    base, key = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 40
    for operation in operations:
        if operation.path.startswith("/api/keys"):
            continue  # revoking our own key would turn the rest into 401s

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck),
                  phases=[hypothesis.Phase.generate])
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base, headers=headers, timeout=10)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code}: {response.text[:200]}")

        check()
    assert failures == []
    assert statuses.get(200, 0) + statuses.get(204, 0) > 100, statuses
