"""Operations: queue statistics, live calls and agents (Redis), CDR search (PostgreSQL)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from appserver.api import schemas as s
from appserver.api.admin_routes import SlugPath
from appserver.api.deps import Context, Supervisor
from appserver.queues.model import QueuedCall
from appserver.store.cdrs import MAX_PAGE, search_cdrs

router = APIRouter(prefix="/api", tags=["operations"])


@router.get("/stats/queues")
async def queue_stats(ctx: Context, _: Supervisor) -> list[dict[str, Any]]:
    """Live statistics of every queue the runtime knows (waiting, service level, agents)."""
    return [(await ctx.queues.stats(q)).to_dict() for q in await ctx.queues.queue_names()]


@router.get("/stats/queues/{name}")
async def one_queue_stats(ctx: Context, _: Supervisor, name: SlugPath) -> dict[str, Any]:
    if name not in await ctx.queues.queue_names():
        raise HTTPException(404, f"no queue named {name!r} is published")
    return (await ctx.queues.stats(name)).to_dict()


@router.get("/calls")
async def live_calls(ctx: Context, _: Supervisor) -> list[dict[str, Any]]:
    """Calls in the queues right now: waiting, being offered, or with an agent (``held``:
    on hold; ``transfer``: the agent's blind transfer under way)."""
    now_ms = datetime.now().timestamp() * 1000
    return [_live_call(call, now_ms) for queue in await ctx.queues.queue_names()
            for call in await ctx.queues.queue_calls(queue)]


def _live_call(call: QueuedCall, now_ms: float) -> dict[str, Any]:
    waited = max(0.0, now_ms - call.joined_ms) if call.joined_ms else 0.0
    return {"call_id": call.call_id, "queue": call.queue, "state": call.state,
            "caller": call.caller, "agent": call.agent or None, "held": call.held,
            "transfer": call.transfer or None, "waiting_seconds": round(waited / 1000, 1)}


@router.get("/agents-status")
async def agents_status(ctx: Context, _: Supervisor) -> list[dict[str, Any]]:
    """Every agent's runtime state (logged out, available, offered, on call, wrap-up...)."""
    out = []
    for username in await ctx.queues.agent_names():
        status = await ctx.queues.agent(username)
        if status is not None:
            out.append(asdict(status))
    return out


Short = Annotated[str | None, Query(max_length=64)]


@router.get("/cdrs")
async def cdrs(
    ctx: Context,
    _: Supervisor,
    since: datetime | None = None,
    until: datetime | None = None,
    caller: Short = None,
    called: Short = None,
    queue: Short = None,
    agent: Short = None,
    disposition: Annotated[str | None, Query(pattern=r"^[a-z_]{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> s.CdrPageOut:
    """CDRs matching every given filter, newest first. ``since`` is inclusive and ``until``
    exclusive (on the start time; give a time zone, e.g. ``2026-01-31T00:00:00Z``)."""
    for label, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{label}: give a time zone, e.g. 2026-01-31T00:00:00Z")
    page = await search_cdrs(ctx.pool, since=since, until=until, caller=caller, called=called,
                             queue=queue, agent=agent, disposition=disposition, limit=limit,
                             offset=offset)
    return s.CdrPageOut(items=[s.CdrOut.model_validate(asdict(c)) for c in page.items],
                        total=page.total, limit=page.limit, offset=page.offset)
