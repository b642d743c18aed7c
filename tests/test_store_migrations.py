"""The migration runner: from empty, idempotent, concurrent-safe, strict about edits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from appserver.store.migrations import MIGRATIONS_DIR, MigrationError, discover, migrate

CONFIG_TABLES = {
    "schedules", "schedule_hours", "schedule_closures", "ivr_menus", "ivr_menu_options",
    "queues", "agents", "queue_members", "extensions",
}  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def empty_dsn(database_url: str) -> AsyncIterator[str]:
    """A brand-new database with nothing in it (not even schema_migrations)."""
    name = f"callyard_test_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(database_url)._replace(path="/" + name))
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


async def test_migrate_from_empty_then_nothing(empty_dsn: str) -> None:
    assert await _tables(empty_dsn) == set()
    assert await migrate(empty_dsn) == [m.version for m in discover()]
    assert await _tables(empty_dsn) >= CONFIG_TABLES | {"cdrs", "schema_migrations"}
    assert await migrate(empty_dsn) == []


async def test_concurrent_migrators_apply_once(empty_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(4)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in discover()]
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
    finally:
        await conn.close()


def _copy_core(directory: Path) -> None:
    for migration in discover():
        (directory / migration.path.name).write_text(migration.sql)


async def test_new_migration_is_applied_and_failed_one_rolls_back(
    empty_dsn: str, tmp_path: Path
) -> None:
    _copy_core(tmp_path)
    await migrate(empty_dsn, discover(tmp_path))
    (tmp_path / "900_extra.sql").write_text("CREATE TABLE extra (x int);")
    (tmp_path / "901_broken.sql").write_text("CREATE TABLE half (x int);\nSELEC oops;")
    with pytest.raises(MigrationError, match=r"901_broken\.sql failed: syntax error"):
        await migrate(empty_dsn, discover(tmp_path))
    tables = await _tables(empty_dsn)
    assert "extra" in tables and "half" not in tables  # 900 stayed, 901 rolled back whole
    (tmp_path / "901_broken.sql").write_text("CREATE TABLE half (x int);")
    assert await migrate(empty_dsn, discover(tmp_path)) == ["901_broken"]


async def test_editing_an_applied_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    _copy_core(tmp_path)
    (tmp_path / "900_extra.sql").write_text("CREATE TABLE extra (x int);")
    await migrate(empty_dsn, discover(tmp_path))
    (tmp_path / "900_extra.sql").write_text("CREATE TABLE extra (x int, y int);")
    with pytest.raises(MigrationError, match=r"900_extra\.sql was changed after it was applied"):
        await migrate(empty_dsn, discover(tmp_path))


def test_discover_rejects_bad_names(tmp_path: Path) -> None:
    (tmp_path / "1_core.sql").write_text("")
    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        discover(tmp_path)
    (tmp_path / "1_core.sql").unlink()
    (tmp_path / "002_a.sql").write_text("")
    (tmp_path / "002_b.sql").write_text("")
    with pytest.raises(MigrationError, match=r"number 002 is also used by 002_a\.sql"):
        discover(tmp_path)


def test_shipped_migrations_are_ordered_and_transaction_free() -> None:
    migrations = discover(MIGRATIONS_DIR)
    assert migrations and migrations[0].version == "001_core"
    for m in migrations:
        upper = m.sql.upper()
        assert "BEGIN;" not in upper and "COMMIT;" not in upper, m.version
