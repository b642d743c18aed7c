"""``callyard migrate``: apply pending database migrations (idempotent)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "apply pending PostgreSQL migrations (embedded server when CALLYARD_DATABASE_URL is unset)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--list", action="store_true", help="only show which migrations are applied or pending"
    )


async def _status(dsn: str) -> int:
    import asyncpg

    from appserver.store.migrations import applied_versions, discover

    conn = await asyncpg.connect(dsn)
    try:
        done = await applied_versions(conn)
    finally:
        await conn.close()
    for migration in discover():
        print(f"{migration.version}: {'applied' if migration.version in done else 'pending'}")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncpg

    from appserver.devkit.embedded import EmbeddedError, database_url
    from appserver.store.db import DB_UNAVAILABLE
    from appserver.store.migrations import MigrationError, migrate

    try:
        with database_url(settings, "callyard migrate") as dsn:
            if args.list:
                return asyncio.run(_status(dsn))
            applied = asyncio.run(migrate(dsn))
    except (EmbeddedError, MigrationError, *DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
        print(f"callyard migrate: {exc}", file=sys.stderr)
        return 1
    for version in applied:
        print(f"applied {version}")
    if not applied:
        print("database is up to date")
    return 0
