"""``callyard recordings purge``: delete recordings past the retention (files and rows)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = ("call recordings: purge deletes those older than CALLYARD_RECORDINGS_RETENTION_DAYS "
        "(files and rows; safe to run from cron, again and again)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    purge = sub.add_parser("purge", help="delete expired recordings")
    purge.add_argument("--days", type=int, default=None,
                       help="keep this many days (default: CALLYARD_RECORDINGS_RETENTION_DAYS)")


async def _purge(dsn: str, root: Path, days: int) -> tuple[int, int]:
    from appserver.recordings import purge
    from appserver.store.db import create_pool

    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        return await purge(pool, root, days, datetime.now(UTC))
    finally:
        await pool.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    import asyncpg

    from appserver.devkit.embedded import database_url
    from appserver.store.db import DB_UNAVAILABLE

    days = settings.recordings_retention_days if args.days is None else args.days
    if days < 1:
        print("callyard recordings purge: --days must be at least 1", file=sys.stderr)
        return 2
    with database_url(settings, "callyard recordings") as dsn:
        try:
            rows, files = asyncio.run(_purge(dsn, Path(settings.recordings_dir), days))
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            print(f"callyard recordings: {exc}", file=sys.stderr)
            return 1
    print(f"purged {rows} recording(s) older than {days} day(s); {files} file(s) deleted")
    return 0
