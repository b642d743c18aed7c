"""Call recordings: the agent's controls (start on demand, pause, resume, stop), the list and
the playback (HTTP range requests; every playback is audited).

Who may list and play: supervisors and admins every recording; an agent only the recordings
of their own calls, and only when ``CALLYARD_RECORDINGS_AGENT_ACCESS`` is on.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from appserver.api.auth import Principal
from appserver.api.console_routes import CallControlOut, _act
from appserver.api.deps import AgentSession, Context, client_address, require
from appserver.recordings import file_in

router = APIRouter(tags=["recordings"])
RecordingId = Annotated[int, PathParam(ge=1, le=2**62)]
Session = Annotated[Principal, Depends(require("agent"))]  # anyone signed in; see _only_agent


@router.post("/api/agent/recording/{operation}", status_code=202)
async def agent_recording(ctx: Context, me: AgentSession,
                          operation: Literal["start", "pause", "resume", "stop"]
                          ) -> CallControlOut:
    """Start (a queue recording ``on_demand``), pause, resume (e.g. around a card number) or
    stop (on demand) the recording of the agent's call; the worker owning it acts."""
    assert me.agent
    return CallControlOut(call=await _act(ctx.control.record(me.agent, operation)))


def _only_agent(ctx: Context, me: Principal) -> str | None:
    """None: may see every recording; else the one agent whose recordings ``me`` may see."""
    if me.has("supervisor"):
        return None
    if not ctx.settings.recordings_agent_access or me.agent is None:
        raise HTTPException(403, "recordings are for supervisors and admins "
                                 "(agents: CALLYARD_RECORDINGS_AGENT_ACCESS)")
    return me.agent


def _recording(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "call_id": row["call_id"], "queue": row["queue"],
            "agent": row["agent"], "engine": row["engine"], "path": row["path"],
            "started_at": row["started_at"].isoformat(),
            "seconds": round(float(row["seconds"]), 1), "checksum": row["checksum"]}


@router.get("/api/recordings")
async def recordings_list(
    ctx: Context, me: Session,
    call_id: Annotated[str | None, Query(max_length=128)] = None,
    queue: Annotated[str | None, Query(max_length=63)] = None,
    agent: Annotated[str | None, Query(max_length=63)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Recordings, newest first, filtered by call, queue, agent and start time."""
    only = _only_agent(ctx, me)
    rows = await ctx.pool.fetch(
        "SELECT * FROM recordings WHERE ($1::text IS NULL OR call_id = $1)"
        " AND ($2::text IS NULL OR queue = $2) AND ($3::text IS NULL OR agent = $3)"
        " AND ($4::text IS NULL OR agent = $4)"
        " AND ($5::timestamptz IS NULL OR started_at >= $5)"
        " AND ($6::timestamptz IS NULL OR started_at < $6)"
        " ORDER BY started_at DESC, id DESC LIMIT $7 OFFSET $8",
        call_id, queue, agent, only, since, until, limit, offset)
    return [_recording(r) for r in rows]


@router.get("/api/recordings/{recording}/audio")
async def recording_audio(ctx: Context, me: Session, request: Request,
                          recording: RecordingId) -> FileResponse:
    """The recording's WAV (range requests answered with 206); recorded in the audit trail
    as ``listen`` (one entry per request that starts at the beginning of the file)."""
    only = _only_agent(ctx, me)
    row = await ctx.pool.fetchrow("SELECT * FROM recordings WHERE id = $1"
                                  " AND ($2::text IS NULL OR agent = $2)", recording, only)
    if row is None:
        raise HTTPException(404, "no such recording")
    path = file_in(Path(ctx.settings.recordings_dir), row["path"])
    if path is None:
        raise HTTPException(404, "the recording's file is not in CALLYARD_RECORDINGS_DIR "
                                 "(purged, or not shared with this host)")
    if _starts_listening(request.headers.get("range")):
        await ctx.pool.execute(
            "INSERT INTO audit_log (actor, via, client, action, resource, name)"
            " VALUES ($1, $2, $3, 'listen', 'recording', $4)",
            me.name, me.via, client_address(request, ctx.settings.trusted_proxies),
            f"{row['id']}:{row['call_id']}")
    return FileResponse(path, media_type="audio/wav")


def _starts_listening(range_header: str | None) -> bool:
    """A player asks for the file from its start once, then seeks with further ranges."""
    return range_header is None or range_header.replace(" ", "").startswith("bytes=0-")
