"""Supervisors: the wallboard page, its data and WebSocket, and the actions taken from it
(an agent's state; moving a waiting caller or raising their priority; hanging a call up).

Every route needs the supervisor role (admins too); every action is recorded in the audit
trail (``audit_log``: resource ``agent_state``, ``queued_call`` or ``call``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, StringConstraints, model_validator

from appserver.api import audit
from appserver.api.admin_routes import SlugPath
from appserver.api.auth import AuthError, Principal
from appserver.api.console_routes import CallId, _act, _refused
from appserver.api.context import ApiContext
from appserver.api.deps import Context, Supervisor, client_address
from appserver.api.sockets import forward, open_socket
from appserver.queues.model import MAX_PRIORITY, AgentStatus, QueueConfigError
from appserver.queues.store import QueueError

router = APIRouter(tags=["supervisors"])
templates = Jinja2Templates(directory=Path(__file__).parent / "web" / "templates")

T = TypeVar("T")
Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@+-]{1,128}$")]


class AgentStateIn(BaseModel):
    state: Literal["available", "break", "logged_out"]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=50)] = "break"


class MoveIn(BaseModel):
    """Another queue, a new priority (0..99, higher first), or both."""

    queue: Slug | None = None
    priority: Annotated[int | None, Field(ge=0, le=MAX_PRIORITY)] = None

    @model_validator(mode="after")
    def _something(self) -> MoveIn:
        if self.queue is None and self.priority is None:
            raise ValueError("give a queue, a priority or both")
        return self


async def _record(ctx: ApiContext, request: Request, who: Principal, resource: str, name: str,
                  before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    await audit.record(ctx.pool, resource, name, before, after, actor=who.name, via=who.via,
                       client=client_address(request, ctx.settings.trusted_proxies))


def _state(status: AgentStatus | None) -> dict[str, Any]:
    return {"state": status.state, "reason": status.reason} if status else {}


@router.get("/supervisor", response_class=HTMLResponse, include_in_schema=False)
async def supervisor_page(request: Request) -> HTMLResponse:
    """The wallboard; it shows a login form until the browser has a supervisor's session."""
    return templates.TemplateResponse(request, "supervisor.html", {})


@router.get("/api/wallboard")
async def wallboard(ctx: Context, _: Supervisor) -> dict[str, Any]:
    """What the wallboard shows now (the socket pushes the same on every change), with the
    last hour's samples (``series``: per queue ``[t_ms, waiting, service_level]``)."""
    return {**await ctx.wallboard.snapshot(), "series": await ctx.wallboard.series()}


@router.post("/api/supervisor/agents/{username}/state")
async def set_agent_state(ctx: Context, who: Supervisor, request: Request, username: SlugPath,
                          body: AgentStateIn) -> dict[str, str]:
    """Make an agent available (logging them in if needed), put them on break (after their
    call when on one: ``pending:break``) or log them out (409 ``on_call`` during a call)."""
    before = await ctx.control.status(username)
    if before is None:
        raise HTTPException(404, f"no agent {username!r} in the queue runtime")
    if body.state == "available":
        if before.state == "logged_out":
            await _act(ctx.control.login(username))
        state = await _act(ctx.control.set_available(username))
    elif body.state == "break":
        state = await _act(ctx.control.set_break(username, body.reason))
    else:
        state = await _act(ctx.control.logout(username))
    after = await ctx.control.status(username)
    await _record(ctx, request, who, "agent_state", username, _state(before), _state(after))
    return {"state": state}


@router.post("/api/supervisor/calls/{call_id}/move")
async def move_call(ctx: Context, who: Supervisor, request: Request, call_id: CallId,
                    body: MoveIn) -> dict[str, Any]:
    """Move a waiting caller to another queue and/or change their priority. They keep their
    waiting time; the worker serving them switches to the new queue's music and
    announcements. 409 ``connected`` once an agent has them, 404 ``no_entry`` /
    ``no_such_queue``."""
    moved = await _act_on(ctx.queues.move_call(call_id, body.queue or "", body.priority))
    if (moved.old_queue, moved.old_priority) != (moved.queue, moved.priority):
        await _record(ctx, request, who, "queued_call", call_id,
                      {"queue": moved.old_queue, "priority": moved.old_priority},
                      {"queue": moved.queue, "priority": moved.priority})
    await ctx.queues.match(moved.queue)  # an agent free in the new queue gets them now
    return {"call": call_id, "queue": moved.queue, "priority": moved.priority}


@router.post("/api/supervisor/calls/{call_id}/hangup", status_code=202)
async def hang_up_call(ctx: Context, who: Supervisor, request: Request,
                       call_id: CallId) -> dict[str, str]:
    """Hang up a queued or connected caller: the worker that owns the call ends it in the
    engine (``sent``); an entry nobody owns any more (its worker died) is removed
    (``removed``)."""
    call = await ctx.queues.queued_call(call_id)
    result = await _act_on(ctx.queues.hang_up(call_id))
    before = {"queue": call.queue, "state": call.state, "caller": call.caller,
              "agent": call.agent} if call else {}
    await _record(ctx, request, who, "call", call_id, before, None)
    return {"call": call_id, "result": result}


async def _act_on(coro: Awaitable[T]) -> T:
    """A queue operation; a refusal becomes 404 (no entry, no queue) or 409 (its state)."""
    try:
        return await coro
    except (QueueError, QueueConfigError) as exc:
        raise _refused(exc) from None


def _supervisors_only(principal: Principal) -> None:
    if not principal.has("supervisor"):
        raise AuthError(403, f"the wallboard needs the supervisor role; you are {principal.role}")


@router.websocket("/ws/wallboard")
async def wallboard_socket(ws: WebSocket) -> None:
    """``hello`` (a snapshot with the last hour's ``series``), then a ``snapshot`` on every
    change (within a fraction of a second) and at least every few seconds."""
    session = await open_socket(ws, _supervisors_only)
    if session is None:
        return
    board = session.ctx.wallboard
    queue = board.subscribe()
    try:
        await forward(session, queue, {**await board.snapshot(), "type": "hello",
                                       "series": await board.series()})
    finally:
        board.unsubscribe(queue)
