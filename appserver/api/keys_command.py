"""``callyard api-key``: create, list and revoke API keys (e.g. the first admin key)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "manage API keys for automation: create NAME [--role], list, revoke NAME"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("name")
    create.add_argument("--role", choices=("admin", "supervisor"), default="admin")
    sub.add_parser("list", help="list keys (never their secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")


async def _run(dsn: str, args: argparse.Namespace) -> int:
    import asyncpg

    from appserver.api.audit import AUDITED, record_if_changed
    from appserver.api.auth import create_api_key, list_api_keys, revoke_api_key
    from appserver.store.db import create_pool

    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        if args.action == "list":
            for k in await list_api_keys(pool):
                state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                print(f"{k.name}\t{k.role}\t{state}")
            return 0
        audited, params = AUDITED["/api/keys/{name}"], {"name": args.name}
        before = await audited.snapshot(pool, params)
        if args.action == "create":
            try:
                _, key = await create_api_key(pool, args.name, args.role)
            except asyncpg.UniqueViolationError:
                print(f"callyard api-key: a key named {args.name!r} exists; revoke it or "
                      "choose another name")
                return 1
            except asyncpg.CheckViolationError:
                print("callyard api-key: names are lowercase letters, digits, - and _")
                return 1
            print(key)
        elif not await revoke_api_key(pool, args.name):
            print(f"callyard api-key: no active key named {args.name!r}")
            return 1
        await record_if_changed(pool, audited, params, before,
                                actor=f"cli:{getpass.getuser()}", via="cli", client=None)
    finally:
        await pool.close()
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    import asyncpg

    from appserver.devkit.embedded import database_url
    from appserver.store.db import DB_UNAVAILABLE

    with database_url(settings, "callyard api-key") as dsn:
        try:
            return asyncio.run(_run(dsn, args))
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            print(f"callyard api-key: {exc}", file=sys.stderr)
            return 1
