"""LiveKit rooms for calls: created when an agent accepts, deleted when the call ends.

Room names come from :func:`appserver.agents.sip.room_name`. Which room an agent is in is
kept in Redis (``callyard:lk:agent:<username>``) so any API process can end it. Ending moves
the room, in one step, to the sorted set ``callyard:lk:rooms_to_delete`` (score: when to
try), then deletes it in LiveKit; a deletion LiveKit did not take (down, unreachable, an
error) stays in the set and is retried with backoff by whichever API process gets to it
first (:meth:`CallRooms.start_janitor`). Everything is idempotent: several processes
reacting to the same event delete a room once, and a room LiveKit no longer has counts as
deleted. Tokens are scoped to one room with a short lifetime: enough to join, useless
elsewhere.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from appserver.agents.sip import room_name
from appserver.shells.aio import honour_cancel
from livekit import api

log = logging.getLogger("callyard.livekit")

TOKEN_TTL = datetime.timedelta(minutes=2)
EMPTY_TIMEOUT = 60  # seconds LiveKit keeps a room nobody joined
AGENT_ROOM_KEY = "callyard:lk:agent:"
ROOMS_TO_DELETE = "callyard:lk:rooms_to_delete"  # sorted set: room -> next attempt (ms)
DELETE_FAILURES = ROOMS_TO_DELETE + ":failures"  # hash: room -> failed attempts so far
CLAIM_MS = 10_000  # a deletion under way: other processes leave that room alone this long
RETRY_MAX_SECONDS = 60.0

# GETDEL the agent's room and queue it for deletion, atomically: no crash loses it.
_TAKE_ROOM = """
local room = redis.call('GETDEL', KEYS[1])
if room then redis.call('ZADD', KEYS[2], ARGV[1], room) end
return room
"""
# Rooms due for another attempt, claimed for CLAIM_MS (another process skips them).
_CLAIM_DUE = """
local now, claim = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, room in ipairs(due) do redis.call('ZADD', KEYS[1], now + claim, room) end
return due
"""


class LiveKitUnavailable(Exception):
    """LiveKit's API could not be reached or refused the request (the message says which)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class RoomGrant:
    room: str
    token: str
    url: str  # where the browser connects (the LiveKit server's ws(s) URL)
    expires_in: int


def browser_url(server_url: str) -> str:
    """The WebSocket URL browsers use for a LiveKit server given as http(s)."""
    if server_url.startswith("https://"):
        return "wss://" + server_url.removeprefix("https://")
    if server_url.startswith("http://"):
        return "ws://" + server_url.removeprefix("http://")
    return server_url


class CallRooms:
    """Room service client plus token minting for the agent console."""

    def __init__(self, redis: aioredis.Redis, url: str, api_key: str, api_secret: str,
                 public_url: str | None = None, *, require_livekit: bool = True) -> None:
        self.redis = redis
        # False for `callyard dev`, whose simulated engines answer a room's SIP address
        # themselves: a room LiveKit cannot create is then skipped, with a warning.
        self.require_livekit = require_livekit
        self.url = url
        self.public_url = public_url or browser_url(url)
        self.api_key = api_key
        self.api_secret = api_secret
        self._session: aiohttp.ClientSession | None = None
        self._api: api.LiveKitAPI | None = None
        self._take_room = redis.register_script(_TAKE_ROOM)
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._closing = False
        self._janitor: asyncio.Task[None] | None = None

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            self._api = api.LiveKitAPI(self.url, self.api_key, self.api_secret,
                                       session=self._session, failover=False)
        return self._api

    async def close(self) -> None:
        self._closing = True
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.wait([self._janitor], timeout=5)
            self._janitor = None
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._api = None

    def token(self, agent: str, display_name: str, room: str, *,
              role: str = "agent") -> RoomGrant:
        """A join token for ``room`` only, valid for :data:`TOKEN_TTL`; the participant is
        ``<role>-<agent>`` (``agent-alice``, ``supervisor-sam``)."""
        grants = api.VideoGrants(room_join=True, room=room, can_publish=True,
                                 can_subscribe=True, can_publish_data=False)
        jwt = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(f"{role}-{agent}")
            .with_name(display_name)
            .with_ttl(TOKEN_TTL)
            .with_grants(grants)
            .to_jwt()
        )
        return RoomGrant(room, jwt, self.public_url, int(TOKEN_TTL.total_seconds()))

    async def create(self, call_id: str, room: str = "") -> str:
        """Create the call's room, or ``room`` for that call (a supervisor's), before the
        engine bridges a leg into it; raises :class:`LiveKitUnavailable` (unless LiveKit is
        optional). Idempotent: LiveKit returns a room that exists."""
        room = room or room_name(call_id)
        try:
            await self._client().room.create_room(
                api.CreateRoomRequest(name=room, empty_timeout=EMPTY_TIMEOUT, max_participants=4,
                                      metadata=json.dumps({"call_id": call_id})))
        except api.TwirpError as exc:
            self._no_room(room, f"LiveKit refused to create the room: {exc.code}", exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._no_room(room, f"LiveKit cannot be reached: {str(exc) or type(exc).__name__}",
                          exc)
        else:
            log.info("room created", extra={"room": room, "call_id": call_id})
        return room

    def _no_room(self, room: str, reason: str, exc: Exception) -> None:
        if self.require_livekit:
            raise LiveKitUnavailable(reason) from exc
        log.warning("%s; going on without it (simulated engines)", reason, extra={"room": room})

    async def enter(self, agent: str, room: str) -> None:
        """Remember that ``agent`` is in ``room`` (their call's)."""
        await self.redis.set(AGENT_ROOM_KEY + agent, room, ex=86400)

    async def room_of(self, agent: str) -> str | None:
        value = await self.redis.get(AGENT_ROOM_KEY + agent)
        return str(value) if value else None

    async def close_for(self, agent: str) -> str | None:
        """End the room ``agent`` is in, if any (its SIP leg ends, so the engine hangs up the
        caller): returns it. When LiveKit does not take the deletion now, it is retried
        later (:meth:`start_janitor`); the room counts as closed for the agent at once."""
        room = await self._take_room(keys=[AGENT_ROOM_KEY + agent, ROOMS_TO_DELETE],
                                     args=[_now_ms() + CLAIM_MS])
        if not room:
            return None
        await self._delete(str(room))
        return str(room)

    async def delete_room(self, room: str) -> None:
        """Delete ``room`` now, or later when LiveKit does not take it now (see
        :meth:`start_janitor`)."""
        await self.redis.zadd(ROOMS_TO_DELETE, {room: _now_ms() + CLAIM_MS})
        await self._delete(room)

    async def delete_due(self, limit: int = 50) -> int:
        """One round of retries: delete the rooms due; returns how many were deleted."""
        due = await self._claim_due(keys=[ROOMS_TO_DELETE], args=[_now_ms(), CLAIM_MS, limit])
        deleted = 0
        for room in due:
            deleted += await self._delete(str(room))
        return deleted

    def start_janitor(self, interval: float = 1.0) -> None:
        """Retry room deletions in the background until :meth:`close` (each API process
        runs one)."""
        self._janitor = asyncio.create_task(self._run_janitor(interval), name="room-janitor")

    async def _run_janitor(self, interval: float) -> None:
        while not self._closing:  # a flag too: redis-py can swallow a cancellation
            try:
                await self.delete_due()
            except (RedisError, OSError) as exc:
                honour_cancel()
                log.warning("room deletions not retried this round", extra={"error": str(exc)})
            await asyncio.sleep(interval)

    async def _delete(self, room: str) -> bool:
        try:
            await self._client().room.delete_room(api.DeleteRoomRequest(room=room))
        except api.TwirpError as exc:
            if exc.code != "not_found":
                return await self._retry_later(room, f"LiveKit refused: {exc.code}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self._retry_later(room, str(exc) or type(exc).__name__)
        await self._forget(room)
        log.info("room deleted", extra={"room": room})
        return True

    async def _forget(self, room: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(ROOMS_TO_DELETE, room)
            pipe.hdel(DELETE_FAILURES, room)
            await pipe.execute()

    async def _retry_later(self, room: str, error: str) -> bool:
        if not self.require_livekit:  # no LiveKit with simulated engines: nothing to delete
            await self._forget(room)
            return False
        failures = int(await self.redis.hincrby(DELETE_FAILURES, room, 1))
        delay = min(RETRY_MAX_SECONDS, 2.0 ** (failures - 1))
        await self.redis.zadd(ROOMS_TO_DELETE, {room: _now_ms() + int(delay * 1000)}, xx=True)
        log.warning("room not deleted; retrying in %.0f s", delay,
                    extra={"room": room, "error": error, "failures": failures})
        return False
