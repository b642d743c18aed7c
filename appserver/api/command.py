"""``callyard api``: the HTTP API, plus the menu reloader that publishes menus to Redis."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from appserver.settings import Settings
    from appserver.stopping import StopSignals

HELP = (
    "run the HTTP API (admin REST, agent console, WebSocket, health) and the menu publisher"
    " (PostgreSQL -> Redis)"
)
log = logging.getLogger("callyard.api")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default CALLYARD_API_HOST)")
    parser.add_argument("--port", type=int, help="bind port (default CALLYARD_API_PORT)")


def http_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """The uvicorn server for ``app``. Its own X-Forwarded-For handling is off: the API
    believes that header only from CALLYARD_TRUSTED_PROXIES (appserver.api.deps)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                         lifespan="off", proxy_headers=False, access_log=False))


def exposure_problems(settings: Settings, host: str) -> list[str]:
    """What makes serving on ``host`` unsafe: development secrets on a non-loopback address."""
    from appserver.settings import is_loopback

    if is_loopback(host):
        return []
    problems = []
    if not settings.api_secret:
        problems.append(
            "CALLYARD_API_SECRET is unset: set it to 32+ random characters (openssl rand"
            " -base64 48), the same for every API process"
        )
    if settings.livekit_api_key == "devkey" or settings.livekit_api_secret == "secret":
        problems.append(
            "CALLYARD_LIVEKIT_API_KEY / CALLYARD_LIVEKIT_API_SECRET are LiveKit's development"
            " pair (devkey / secret), with which anyone can join every call's room: use your"
            " LiveKit server's key pair"
        )
    return problems


async def serve(settings: Settings, dsn: str, redis_url: str, host: str, port: int,
                stop: StopSignals) -> None:
    from appserver.api.services import Services
    from appserver.stopping import serve_http

    async with Services.started(dsn, redis_url, settings) as services:
        await serve_http(http_server(services.app(), host, port), stop)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.stopping import StopSignals

    host = args.host or settings.api_host
    problems = exposure_problems(settings, host)
    if problems and not settings.api_allow_insecure:
        print(f"callyard api: refusing to serve on {host}, which is not a loopback address:\n"
              + "".join(f"  - {p}\n" for p in problems)
              + "Fix these, bind 127.0.0.1, or set CALLYARD_API_ALLOW_INSECURE=true to serve"
              " anyway.", file=sys.stderr)
        return 2
    for problem in problems:
        log.warning("INSECURE (CALLYARD_API_ALLOW_INSECURE is set): %s", problem)
    dsn, redis_url = settings.required_urls("database_url", "redis_url")
    stop = StopSignals.install()  # SIGTERM must not skip the clean-up (appserver.stopping)
    asyncio.run(serve(settings, dsn, redis_url, host, args.port or settings.api_port, stop))
    return 0
