"""Ordered plain-SQL migrations: ``appserver/store/migrations/NNN_name.sql``.

Each file is applied once, in its own transaction, and recorded in ``schema_migrations``
with a checksum. A PostgreSQL advisory lock serialises concurrent migrators, so two
``callyard migrate`` at once are safe. Files must not contain BEGIN/COMMIT. Changing a
file after it was applied is an error: add a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant identifying "callyard schema migration" among advisory locks.
ADVISORY_LOCK_KEY = 7_265_283_101
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """Migrations cannot be applied; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    version: str  # "001_core": the file name without .sql
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of ``directory`` in order; bad names or duplicate numbers fail."""
    migrations: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        number = match.group(1)
        if number in numbers:
            raise MigrationError(f"{path.name}: number {number} is also used by {numbers[number]}")
        numbers[number] = path.name
        migrations.append(Migration(path.stem, path, path.read_text(encoding="utf-8")))
    return migrations


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def applied_versions(conn: asyncpg.Connection) -> dict[str, str]:
    """version -> checksum of the migrations recorded in the database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


async def migrate_connection(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply pending migrations on ``conn``; return the versions applied (maybe none)."""
    migrations = discover() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        done = await applied_versions(conn)
        known = {m.version for m in migrations}
        unknown = sorted(set(done) - known)
        if unknown:
            log.warning("database has migrations this code does not know: %s", ", ".join(unknown))
        applied: list[str] = []
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} was changed after it was applied; "
                        "restore it and put the change in a new migration"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                        migration.version,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.path.name} failed: {exc}") from exc
            log.info("applied migration %s", migration.version)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Connect to ``dsn`` and apply pending migrations; return the versions applied."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate_connection(conn, migrations)
    finally:
        await conn.close()
