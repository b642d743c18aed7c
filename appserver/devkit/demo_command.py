"""``callyard seed-demo``: load the demo IVR, queue and agents into the configured database."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "load the demo IVR (9999), 'support' queue and two agents into the database"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


async def _seed(dsn: str) -> None:
    from appserver.devkit.demo import DEMO_ADMIN, DEMO_AGENTS, seed_demo
    from appserver.store.db import connect
    from appserver.store.migrations import migrate

    for version in await migrate(dsn):
        print(f"applied {version}")
    conn = await connect(dsn)
    try:
        for line in await seed_demo(conn):
            print(f"seeded {line}")
    finally:
        await conn.close()
    for agent in DEMO_AGENTS:
        print(f"demo agent: {agent.username} / {agent.password} (extension {agent.extension})")
    print(f"demo admin: {DEMO_ADMIN.username} / {DEMO_ADMIN.password} (/admin, /supervisor)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.devkit.embedded import database_url

    with database_url(settings, "callyard seed-demo") as dsn:
        asyncio.run(_seed(dsn))
    return 0
