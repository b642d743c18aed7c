"""What request handlers share: database pool, Redis, settings and the LiveKit client (and
its janitor, which retries room deletions LiveKit did not take)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from fastapi import Request

from appserver.agents.rooms import CallRooms
from appserver.api.auth import LoginLimiter, Sessions
from appserver.api.console_hub import AgentHub
from appserver.api.wallboard import Wallboard
from appserver.queues.agent_control import AgentControl
from appserver.queues.store import QueueStore

if TYPE_CHECKING:
    from appserver.settings import Settings


# Where earlier versions kept the session secret (anyone who can read Redis could sign with it).
LEGACY_SECRET_KEY = "callyard:api:secret"


@dataclass
class ApiContext:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    settings: Settings
    sessions: Sessions
    rooms: CallRooms
    limiter: LoginLimiter = field(init=False)
    queues: QueueStore = field(init=False)
    control: AgentControl = field(init=False)
    hub: AgentHub = field(init=False)
    wallboard: Wallboard = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = LoginLimiter(self.redis)
        self.queues = QueueStore(self.redis)
        self.control = AgentControl(self.queues)
        self.hub = AgentHub(self.redis, self.rooms, self.queues)
        self.wallboard = Wallboard(self.redis, self.queues, self.settings.wallboard_timezone)

    @classmethod
    async def start(cls, pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, *,
                    require_livekit: bool = True) -> ApiContext:
        """Context with the session secret resolved and the agent event hub running
        (``require_livekit``: see :class:`~appserver.agents.rooms.CallRooms`)."""
        from appserver.api.auth import session_secret

        rooms = CallRooms(redis, settings.livekit_url, settings.livekit_api_key,
                          settings.livekit_api_secret, settings.livekit_public_url,
                          require_livekit=require_livekit)
        sessions = Sessions(session_secret(settings), settings.api_session_ttl, redis)
        await redis.delete(LEGACY_SECRET_KEY)
        ctx = cls(pool, redis, settings, sessions, rooms)
        await ctx.hub.start()
        await ctx.wallboard.start()
        rooms.start_janitor()
        return ctx

    async def stop(self) -> None:
        await self.hub.stop()
        await self.wallboard.stop()
        await self.rooms.close()


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise RuntimeError("the API was built without its services (create_app(context=...))")
    return ctx
