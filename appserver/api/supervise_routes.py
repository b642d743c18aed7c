"""Listen, whisper, barge: a supervisor joins a call connected to an agent.

``POST /api/calls/{call}/supervise`` creates the supervisor's own LiveKit room for the call
(:func:`appserver.agents.sip.supervisor_room`) and answers with a token for it; the worker
that owns the call (on whichever node: the request goes to its inbox, see
``lua/supervise.lua``) has the engine dial that room and attach the leg to the call in the
mode asked. ``PATCH`` changes the mode on the same leg, ``DELETE`` ends it. Supervisors and
admins only, with a person's session (an API key cannot listen); every action is in the
audit log (resource ``supervision``, the call id as its name) and the agent's console shows
it while it lasts.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from appserver.agents.sip import supervisor_room
from appserver.api.audit import record_action
from appserver.api.auth import AuthError, Principal
from appserver.api.console_routes import CallId, RoomOut, _create_room, _grant, _refused
from appserver.api.context import ApiContext
from appserver.api.deps import Context, Supervisor, client_address
from appserver.queues.store import QueueError
from ivr.calls import SuperviseMode

router = APIRouter(tags=["supervise"])
PATH = "/api/calls/{call}/supervise"


class SuperviseIn(BaseModel):
    mode: SuperviseMode


class SupervisionOut(BaseModel):
    call: str
    agent: str
    mode: Literal["listen", "whisper", "barge", "off"]
    livekit: RoomOut | None = None


def _person(principal: Principal) -> str:
    if principal.agent is None:
        raise AuthError(403, "supervising a call needs a person's session, not an API key")
    return principal.agent


async def _apply(ctx: ApiContext, request: Request, me: Principal, call: str, op: str,
                 mode: str = "") -> str:
    """Carry ``op`` out in Redis and audit it; returns the call's agent."""
    supervisor = _person(me)
    before = await ctx.queues.supervision(call)
    try:
        agent = await ctx.queues.supervise(call, supervisor, op, mode)
    except QueueError as exc:
        raise _refused(exc) from None
    was = {"supervisor": before[0], "mode": before[1], "agent": agent} if before else None
    now = None if op == "stop" else {"supervisor": supervisor, "mode": mode, "agent": agent}
    action = "delete" if op == "stop" else "update" if before else "create"
    await record_action(ctx.pool, me, client_address(request, ctx.settings.trusted_proxies),
                        action, "supervision", call, was, now)
    return agent


@router.post(PATH)
async def supervise(ctx: Context, request: Request, me: Supervisor, call: CallId,
                    body: SuperviseIn) -> SupervisionOut:
    """Listen to, whisper to the agent on, or barge in on ``call``: the answer carries the
    supervisor's room and a token for it (join it to hear the call). 409 when the call is
    not connected to an agent or another supervisor is on it."""
    supervisor = _person(me)
    room = await _create_room(ctx, call, supervisor_room(call))
    agent = await _apply(ctx, request, me, call, "start", body.mode)
    return SupervisionOut(call=call, agent=agent, mode=body.mode,
                          livekit=await _grant(ctx, supervisor, room, role="supervisor"))


@router.patch(PATH)
async def change_mode(ctx: Context, request: Request, me: Supervisor, call: CallId,
                      body: SuperviseIn) -> SupervisionOut:
    """Switch between listen, whisper and barge without dialling again."""
    agent = await _apply(ctx, request, me, call, "change", body.mode)
    return SupervisionOut(call=call, agent=agent, mode=body.mode)


@router.delete(PATH)
async def stop(ctx: Context, request: Request, me: Supervisor, call: CallId) -> SupervisionOut:
    """Leave the call: the supervisor's leg is hung up and their room deleted."""
    agent = await _apply(ctx, request, me, call, "stop")
    await ctx.rooms.delete_room(supervisor_room(call))
    return SupervisionOut(call=call, agent=agent, mode="off")
