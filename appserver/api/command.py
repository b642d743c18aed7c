"""``callyard api``: the HTTP API, plus the menu reloader that publishes menus to Redis."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings
    from appserver.stopping import StopSignals

HELP = (
    "run the HTTP API (admin REST, agent console, WebSocket, health) and the menu publisher"
    " (PostgreSQL -> Redis)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default CALLYARD_API_HOST)")
    parser.add_argument("--port", type=int, help="bind port (default CALLYARD_API_PORT)")


async def serve(settings: Settings, dsn: str, redis_url: str, host: str, port: int,
                stop: StopSignals) -> None:
    import uvicorn

    from appserver.api.services import Services
    from appserver.stopping import serve_http

    async with Services.started(dsn, redis_url, settings) as services:
        app = services.app()
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off")
        )
        await serve_http(server, stop)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.embedded import storage_urls
    from appserver.stopping import StopSignals

    stop = StopSignals.install()  # SIGTERM must not skip stopping the embedded servers
    with storage_urls(settings) as (dsn, redis_url):
        if not stop.requested:
            asyncio.run(
                serve(settings, dsn, redis_url, args.host or settings.api_host,
                      args.port or settings.api_port, stop)
            )
    return 0
