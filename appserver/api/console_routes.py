"""The agent console: its page, the agent's own state changes, offers and the WebSocket.

Every action applies to the logged-in agent (from the session), never to a name in the
request, so an agent can only ever act for themselves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, StringConstraints

from appserver.agents.rooms import LiveKitUnavailable
from appserver.api.auth import AuthError, Principal
from appserver.api.console_hub import offer_details
from appserver.api.context import ApiContext
from appserver.api.deps import AgentSession, Context
from appserver.api.sockets import forward, open_socket
from appserver.queues.model import QueueConfigError
from appserver.queues.store import QueueError
from appserver.store.agents import get_agent
from appserver.store.cdrs import search_cdrs

log = logging.getLogger("callyard.api.console")
router = APIRouter(tags=["console"])
templates = Jinja2Templates(directory=Path(__file__).parent / "web" / "templates")

CallId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")]


class BreakIn(BaseModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=50)] = "break"


class CallIn(BaseModel):
    call: CallId


class TransferIn(BaseModel):
    """Blind transfer: ``extension`` (the engine's dialplan takes the call) or ``queue``."""

    kind: Literal["extension", "queue"]
    target: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@+*#-]{1,128}$")]


class CallControlOut(BaseModel):
    call: str
    held: bool | None = None
    transfer: str = ""


class RoomOut(BaseModel):
    room: str
    token: str
    url: str
    expires_in: int


class AcceptOut(BaseModel):
    ok: bool
    error: str = ""
    queue: str = ""
    livekit: RoomOut | None = None


_REFUSAL_STATUS = {"bad_target": 422, "invalid": 422, "no_such_queue": 404, "no_entry": 404}


def _refused(exc: QueueError | QueueConfigError) -> HTTPException:
    code = getattr(exc, "code", "invalid")
    return HTTPException(_REFUSAL_STATUS.get(code, 409), {"code": code, "message": str(exc)})


async def status_of(ctx: ApiContext, agent: str) -> dict[str, Any]:
    status = await ctx.control.status(agent)
    if status is None:
        return {"agent": agent, "state": "unknown",
                "message": "not in the queue runtime yet (not a member of any queue?)"}
    out: dict[str, Any] = asdict(status)
    out["offer_details"] = await offer_details(ctx.queues, status.offer) if status.offer else None
    out["room"] = await ctx.rooms.room_of(agent)
    call = await ctx.queues.queued_call(status.call) if status.call else None
    out["held"] = call is not None and call.held
    supervision = await ctx.queues.supervision(status.call) if status.call else None
    out["supervision"] = {"supervisor": supervision[0], "mode": supervision[1]} \
        if supervision else None
    return out


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def console(request: Request) -> HTMLResponse:
    """The console page; it shows a login form until the browser has a session."""
    return templates.TemplateResponse(request, "console.html", {})


async def _act(coro: Any) -> str:
    try:
        return str(await coro)
    except (QueueError, QueueConfigError) as exc:
        raise _refused(exc) from None


@router.get("/api/agent/status")
async def agent_status(ctx: Context, me: AgentSession) -> dict[str, Any]:
    assert me.agent
    return await status_of(ctx, me.agent)


@router.post("/api/agent/login")
async def agent_login(ctx: Context, me: AgentSession) -> dict[str, str]:
    """Start taking calls (available)."""
    assert me.agent
    return {"state": await _act(ctx.control.login(me.agent))}


@router.post("/api/agent/logout")
async def agent_logout(ctx: Context, me: AgentSession) -> dict[str, str]:
    assert me.agent
    return {"state": await _act(ctx.control.logout(me.agent))}


@router.post("/api/agent/available")
async def agent_available(ctx: Context, me: AgentSession) -> dict[str, str]:
    assert me.agent
    return {"state": await _act(ctx.control.set_available(me.agent))}


@router.post("/api/agent/break")
async def agent_break(ctx: Context, me: AgentSession, body: BreakIn) -> dict[str, str]:
    """Go on break now, or after the current call (``pending:break``)."""
    assert me.agent
    return {"state": await _act(ctx.control.set_break(me.agent, body.reason))}


async def _grant(ctx: ApiContext, agent: str, room: str, role: str = "agent") -> RoomOut:
    record = await get_agent(ctx.pool, agent)
    grant = ctx.rooms.token(agent, record.display_name if record else agent, room, role=role)
    return RoomOut(room=grant.room, token=grant.token, url=grant.url,
                   expires_in=grant.expires_in)


async def _create_room(ctx: ApiContext, call_id: str, room: str = "") -> str:
    try:
        return await ctx.rooms.create(call_id, room)
    except LiveKitUnavailable as exc:
        log.error("offer not taken: no room", extra={"call_id": call_id, "error": str(exc)})
        raise HTTPException(503, {"code": "livekit_unavailable",
                                  "message": f"{exc}; the call is still offered to you, "
                                             "try again"},
                            headers={"Retry-After": "2"}) from None


@router.post("/api/agent/accept")
async def agent_accept(ctx: Context, me: AgentSession, body: CallIn) -> AcceptOut:
    """Take the offered call: the call's LiveKit room is created and the answer carries a
    token for that room only. 503 while LiveKit cannot be reached: the offer stands."""
    assert me.agent
    status = await ctx.control.status(me.agent)
    offered = status is not None and (status.state, status.offer) == ("offered", body.call)
    # The room first: without it the agent could not talk to the caller they took.
    room = await _create_room(ctx, body.call) if offered else ""
    try:
        result = await ctx.control.accept(me.agent, body.call)
    except (QueueError, QueueConfigError) as exc:
        raise _refused(exc) from None
    if not result.ok:  # another agent's ring-all room, or one nobody joins (LiveKit ends it)
        return AcceptOut(ok=False, error=result.error)
    room = room or await _create_room(ctx, body.call)  # offered between the two reads
    await ctx.rooms.enter(me.agent, room)
    return AcceptOut(ok=True, queue=result.queue, livekit=await _grant(ctx, me.agent, room))


@router.post("/api/agent/decline")
async def agent_decline(ctx: Context, me: AgentSession, body: CallIn) -> dict[str, bool]:
    assert me.agent
    try:
        return {"declined": await ctx.control.decline(me.agent, body.call)}
    except (QueueError, QueueConfigError) as exc:
        raise _refused(exc) from None


@router.post("/api/agent/hangup")
async def agent_hangup(ctx: Context, me: AgentSession) -> dict[str, str]:
    """End the call: the agent goes to wrap-up, the worker that owns the call ends the
    agent's leg, and the room is deleted (now, or once LiveKit can be reached again)."""
    assert me.agent
    room = await ctx.rooms.close_for(me.agent)
    try:
        state = await ctx.control.end_call(me.agent)
    except QueueError as exc:
        if exc.code != "not_on_call":
            raise _refused(exc) from None
        status = await ctx.control.status(me.agent)
        state = status.state if status else "unknown"
    return {"state": state, "room_closed": room or ""}


@router.post("/api/agent/hold", status_code=202)
async def agent_hold(ctx: Context, me: AgentSession) -> CallControlOut:
    """Put the caller on hold: they hear music on hold and neither side hears the other.
    The worker that owns the call carries it out; the socket gets a ``hold`` event."""
    assert me.agent
    return CallControlOut(call=await _act(ctx.control.hold(me.agent)), held=True)


@router.post("/api/agent/unhold", status_code=202)
async def agent_unhold(ctx: Context, me: AgentSession) -> CallControlOut:
    assert me.agent
    return CallControlOut(call=await _act(ctx.control.unhold(me.agent)), held=False)


@router.post("/api/agent/transfer", status_code=202)
async def agent_transfer(ctx: Context, me: AgentSession, body: TransferIn) -> CallControlOut:
    """Blind-transfer the caller to an extension or a queue. The agent's leg ends and the
    agent goes to wrap-up; the caller goes on without them."""
    assert me.agent
    target = f"{body.kind}:{body.target}"
    return CallControlOut(call=await _act(ctx.control.transfer(me.agent, target)),
                          transfer=target)


@router.get("/api/agent/queues")
async def agent_queues(ctx: Context, me: AgentSession) -> list[str]:
    """Queue names an agent can transfer a caller to."""
    return sorted(await ctx.queues.queue_names())


@router.get("/api/agent/token")
async def agent_token(ctx: Context, me: AgentSession) -> RoomOut:
    """A fresh token for the room of the agent's current call (to rejoin after a reload)."""
    assert me.agent
    room = await ctx.rooms.room_of(me.agent)
    if room is None:
        raise HTTPException(404, "you are not on a call")
    return await _grant(ctx, me.agent, room)


@router.get("/api/agent/history")
async def agent_history(
    ctx: Context, me: AgentSession, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[dict[str, Any]]:
    """The agent's most recent calls."""
    page = await search_cdrs(ctx.pool, agent=me.agent, limit=limit)
    return [
        {"call_id": c.call_id, "caller": c.caller, "queue": c.queue,
         "started_at": c.started_at.isoformat(),
         "answered_at": c.answered_at.isoformat() if c.answered_at else None,
         "ended_at": c.ended_at.isoformat() if c.ended_at else None,
         "disposition": c.disposition, "menu_path": list(c.menu_path)}
        for c in page.items
    ]


def _agents_only(principal: Principal) -> None:
    if principal.agent is None:
        raise AuthError(403, "the agent socket needs an agent's session")


@router.websocket("/ws/agent")
async def agent_socket(ws: WebSocket) -> None:
    """Live events for the logged-in agent: ``hello`` (full status) first, then ``state``,
    ``offer``, ``offer_withdrawn``, ``hold``, ``transfer`` and ``resync`` as they happen."""
    session = await open_socket(ws, _agents_only)
    if session is None:
        return
    agent = session.principal.agent
    assert agent is not None
    queue = session.ctx.hub.subscribe(agent)
    try:
        await forward(session, queue, {"type": "hello",
                                       "status": await status_of(session.ctx, agent)},
                      idle={"type": "ping"})
    finally:
        session.ctx.hub.unsubscribe(agent, queue)
