"""``callyard menus``: check, publish, inspect and live-reload the IVR menus.

callyard menus check     validate the menus in PostgreSQL, list every problem (exit 1 on errors)
callyard menus publish   compile and publish them to Redis now (exit 1 if rejected)
callyard menus status    the live version and the last error, from Redis
callyard menus watch     run the live reloader in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "check, publish, inspect or live-reload the IVR menus (PostgreSQL -> Redis)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["check", "publish", "status", "watch"],
        help="check: validate; publish: compile and publish now; status: live version and "
        "last error; watch: follow edits and publish them (foreground)",
    )


async def _check(dsn: str) -> int:
    from appserver.menus.loader import load_source
    from appserver.store.db import connect
    from ivr.validate import validate

    conn = await connect(dsn)
    try:
        source = await load_source(conn)
    finally:
        await conn.close()
    issues = validate(source)
    for issue in issues:
        print(f"{issue.severity}: {issue}")
    n_errors = sum(1 for i in issues if i.severity == "error")
    print(
        f"{len(source.menus)} menus, {len(source.extensions)} extensions, "
        f"{len(source.schedules)} schedules: " + (f"{n_errors} error(s)" if n_errors else "valid")
    )
    return 1 if n_errors else 0


async def _publish(dsn: str, redis_url: str) -> int:
    from appserver.menus.reloader import MenuReloader
    from appserver.redisconn import connect

    client = connect(redis_url, "asyncio", decode_responses=False)
    try:
        reloader = MenuReloader(dsn, client)
        ok = await reloader.reload()
    finally:
        await client.aclose()
    if not ok:
        print(f"rejected, version {reloader.version or 'none'} stays live: {reloader.last_error}")
        return 1
    print(f"live version: {reloader.version}")
    return 0


async def _status(redis_url: str) -> int:
    from appserver.menus.publisher import MenuPublisher
    from appserver.redisconn import connect

    client = connect(redis_url, "asyncio", decode_responses=False)
    try:
        status = await MenuPublisher(client).status()
    finally:
        await client.aclose()
    if status["version"] is None:
        print("no menu set published yet")
    else:
        print(
            f"version {status['version']} (digest {status.get('digest', '')}), "
            f"published {status.get('published_at', '?')}, checked {status.get('checked_at')}"
        )
    for warning in status["warnings"]:
        print(f"warning: {warning}")
    if status["last_error"]:
        print(f"last error ({status.get('last_error_at', '?')}): {status['last_error']}")
        return 1
    return 0


async def _watch(dsn: str, redis_url: str) -> int:
    from appserver.menus.reloader import MenuReloader
    from appserver.redisconn import connect

    client = connect(redis_url, "asyncio", decode_responses=False)
    try:
        async with MenuReloader(dsn, client) as reloader:
            print(f"live version {reloader.version}; following edits (Ctrl-C to stop)")
            await asyncio.Event().wait()
    finally:
        await client.aclose()
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncpg
    from redis import RedisError

    from appserver.devkit.embedded import EmbeddedError, database_url, redis_url
    from appserver.store.db import DB_UNAVAILABLE

    try:
        if args.action == "status":
            with redis_url(settings, "callyard menus") as r_url:
                return asyncio.run(_status(r_url))
        with database_url(settings, "callyard menus") as dsn:
            if args.action == "check":
                return asyncio.run(_check(dsn))
            with redis_url(settings, "callyard menus") as r_url:
                if args.action == "publish":
                    return asyncio.run(_publish(dsn, r_url))
                return asyncio.run(_watch(dsn, r_url))
    except (EmbeddedError, *DB_UNAVAILABLE, asyncpg.PostgresError, RedisError) as exc:
        print(f"callyard menus: {exc}", file=sys.stderr)
        return 1
