"""Operations: queue statistics, live calls and agents (Redis), CDR search (PostgreSQL)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from appserver.api import schemas as s
from appserver.api.admin_routes import SlugPath
from appserver.api.deps import Context, Supervisor
from appserver.queues.model import KEY_PREFIX
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
    calls: list[dict[str, Any]] = []
    now_ms = datetime.now().timestamp() * 1000
    for queue in await ctx.queues.queue_names():
        ids = [str(c) for c in
               await ctx.redis.zrange(f"{KEY_PREFIX}queue:{queue}:waiting", 0, 999)]
        for agent in await ctx.redis.hkeys(f"{KEY_PREFIX}queue:{queue}:members"):
            call = await ctx.redis.hget(f"{KEY_PREFIX}agent:{agent!s}", "call")
            if call and str(call) not in ids:
                ids.append(str(call))
        for call_id in ids:
            h = {str(k): str(v) for k, v in
                 (await ctx.redis.hgetall(f"{KEY_PREFIX}call:{call_id}")).items()}
            if not h or h.get("queue") != queue:
                continue
            calls.append({
                "call_id": call_id,
                "queue": queue,
                "state": h.get("state", ""),
                "caller": h.get("caller", ""),
                "agent": h.get("agent") or None,
                "held": h.get("held") == "1",
                "transfer": h.get("transfer") or None,
                "waiting_seconds": round(max(0.0, now_ms - float(h.get("joined") or now_ms))
                                         / 1000, 1),
            })
    return calls


@router.get("/agents-status")
async def agents_status(ctx: Context, _: Supervisor) -> list[dict[str, Any]]:
    """Every agent's runtime state (logged out, available, offered, on call, wrap-up...)."""
    out = []
    for username in sorted(await ctx.redis.smembers(f"{KEY_PREFIX}agents") or []):
        status = await ctx.queues.agent(str(username))
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
