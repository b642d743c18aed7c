"""LiveKit rooms for calls: created when an agent accepts, deleted when the call ends.

Room names come from :func:`appserver.agents.sip.room_name`. Which room an agent is in is
kept in Redis (``callyard:lk:agent:<username>``) so any API process can end it; ending is
idempotent (GETDEL), so several processes reacting to the same event delete it once.
Tokens are scoped to one room with a short lifetime: enough to join, useless elsewhere.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis

from appserver.agents.sip import room_name
from livekit import api

log = logging.getLogger("callyard.livekit")

TOKEN_TTL = datetime.timedelta(minutes=2)
EMPTY_TIMEOUT = 60  # seconds LiveKit keeps a room nobody joined
AGENT_ROOM_KEY = "callyard:lk:agent:"


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
                 public_url: str | None = None) -> None:
        self.redis = redis
        self.url = url
        self.public_url = public_url or browser_url(url)
        self.api_key = api_key
        self.api_secret = api_secret
        self._session: aiohttp.ClientSession | None = None
        self._api: api.LiveKitAPI | None = None

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            self._api = api.LiveKitAPI(self.url, self.api_key, self.api_secret,
                                       session=self._session, failover=False)
        return self._api

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._api = None

    def token(self, agent: str, display_name: str, room: str) -> RoomGrant:
        """A join token for ``room`` only, valid for :data:`TOKEN_TTL`."""
        grants = api.VideoGrants(room_join=True, room=room, can_publish=True,
                                 can_subscribe=True, can_publish_data=False)
        jwt = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(f"agent-{agent}")
            .with_name(display_name)
            .with_ttl(TOKEN_TTL)
            .with_grants(grants)
            .to_jwt()
        )
        return RoomGrant(room, jwt, self.public_url, int(TOKEN_TTL.total_seconds()))

    async def open(self, agent: str, call_id: str) -> str:
        """Create the call's room (before the engine bridges the caller into it) and remember
        that ``agent`` is in it. Returns the room name."""
        room = room_name(call_id)
        await self._client().room.create_room(
            api.CreateRoomRequest(name=room, empty_timeout=EMPTY_TIMEOUT, max_participants=4,
                                  metadata=json.dumps({"call_id": call_id, "agent": agent}))
        )
        await self.redis.set(AGENT_ROOM_KEY + agent, room, ex=86400)
        log.info("room created", extra={"room": room, "agent": agent, "call_id": call_id})
        return room

    async def room_of(self, agent: str) -> str | None:
        value = await self.redis.get(AGENT_ROOM_KEY + agent)
        return str(value) if value else None

    async def close_for(self, agent: str) -> str | None:
        """Delete the room ``agent`` is in, if any (the SIP leg ends, so the engine hangs up
        the caller). Returns the room deleted."""
        room = await self.redis.getdel(AGENT_ROOM_KEY + agent)
        if not room:
            return None
        try:
            await self._client().room.delete_room(api.DeleteRoomRequest(room=str(room)))
        except api.TwirpError as exc:
            if exc.code != "not_found":
                raise
        log.info("room deleted", extra={"room": room, "agent": agent})
        return str(room)
