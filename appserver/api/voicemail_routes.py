"""Voicemail in the console: the messages of the agent's mailboxes, their audio (with HTTP
range requests), "mark handled", and a live stream of new ones.

An agent sees the mailboxes whose ``agent_id`` is theirs or whose queue they are a member
of; supervisors and admins see every mailbox. New messages are NOTIFYed by PostgreSQL
(``callyard_voicemail``, migration 008): one listening connection per API process fans them
out to the open streams (server-sent events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse

from appserver.api.auth import Principal
from appserver.api.deps import AgentSession, Context

router = APIRouter(tags=["console"])
CHANNEL = "callyard_voicemail"
KEEPALIVE = 20.0  # seconds between SSE comments that keep proxies from closing the stream
MessageId = Annotated[int, PathParam(ge=1, le=2**62)]

_VISIBLE = """
SELECT m.id, m.call_id, m.mailbox, m.caller, m.path, m.seconds, m.received_at, m.handled_at,
       m.handled_by
  FROM voicemail_messages m
 WHERE $1 OR m.mailbox IN (
       SELECT b.name FROM voicemail_boxes b
         LEFT JOIN agents a ON a.id = b.agent_id
         LEFT JOIN queue_members qm ON qm.queue_id = b.queue_id
         LEFT JOIN agents ma ON ma.id = qm.agent_id
        WHERE a.username = $2 OR ma.username = $2)
"""


def _sees_all(me: Principal) -> bool:
    return me.has("supervisor")


def _message(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "call_id": row["call_id"], "mailbox": row["mailbox"],
            "caller": row["caller"], "seconds": round(float(row["seconds"]), 1),
            "received_at": row["received_at"].isoformat(),
            "handled_at": row["handled_at"].isoformat() if row["handled_at"] else None,
            "handled_by": row["handled_by"]}


async def _visible(ctx: Context, me: AgentSession, message: int) -> asyncpg.Record:
    row = await ctx.pool.fetchrow(_VISIBLE + " AND m.id = $3", _sees_all(me), me.name, message)
    if row is None:
        raise HTTPException(404, "no such message in your mailboxes")
    return row


@router.get("/api/agent/voicemail")
async def voicemail_list(ctx: Context, me: AgentSession) -> list[dict[str, Any]]:
    """The messages of the caller's mailboxes, newest first (at most 200)."""
    rows = await ctx.pool.fetch(_VISIBLE + " ORDER BY m.received_at DESC LIMIT 200",
                                _sees_all(me), me.name)
    return [_message(r) for r in rows]


@router.get("/api/agent/voicemail/{message}/audio")
async def voicemail_audio(ctx: Context, me: AgentSession, message: MessageId) -> FileResponse:
    """The message's WAV file (range requests answered with 206)."""
    row = await _visible(ctx, me, message)
    root = Path(ctx.settings.recordings_dir).resolve()
    path = (root / row["path"]).resolve()
    if root not in path.parents or not path.is_file():
        raise HTTPException(404, "the message's file is not in CALLYARD_RECORDINGS_DIR")
    return FileResponse(path, media_type="audio/wav")


@router.post("/api/agent/voicemail/{message}/handled")
async def voicemail_handled(ctx: Context, me: AgentSession, message: MessageId
                            ) -> dict[str, Any]:
    """Mark the message handled (once: the first agent to do so is kept)."""
    await _visible(ctx, me, message)
    row = await ctx.pool.fetchrow(
        "UPDATE voicemail_messages SET handled_at = coalesce(handled_at, now()),"
        " handled_by = coalesce(handled_by, $2) WHERE id = $1 RETURNING *", message, me.name)
    return _message(row)


class VoicemailFeed:
    """One LISTEN connection per API process (the pool's connection parameters, outside the
    pool), open while a stream is, fanned out to the open streams."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[str]] = set()
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def subscribe(self, pool: asyncpg.Pool) -> asyncio.Queue[str]:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(*pool._connect_args, **pool._connect_kwargs)
                await self._conn.add_listener(CHANNEL, self._notified)
        queue: asyncio.Queue[str] = asyncio.Queue(100)
        self.queues.add(queue)
        return queue

    async def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.queues.discard(queue)
        async with self._lock:
            if not self.queues and self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for queue in self.queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(payload)


FEED = VoicemailFeed()


@router.get("/api/agent/voicemail-events")
async def voicemail_events(ctx: Context, me: AgentSession) -> StreamingResponse:
    """Server-sent events: ``data: <message>`` for each new message the agent may see."""
    queue = await FEED.subscribe(ctx.pool)

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while True:
                try:
                    payload = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                new = json.loads(payload)
                row = await ctx.pool.fetchrow(_VISIBLE + " AND m.id = $3", _sees_all(me),
                                              me.name, int(new["id"]))
                if row is not None:
                    yield f"data: {json.dumps(_message(row))}\n\n"
        finally:
            await FEED.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})
