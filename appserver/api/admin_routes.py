"""Admin REST API: menus, schedules, extensions, queues, agents and queue membership.

Writes are full replacements (PUT by name); reads never expose password hashes. Every
route needs the admin role except the reads supervisors also use.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response

from appserver.api import schemas as s
from appserver.api.audit import AuditWrites
from appserver.api.auth import hash_password
from appserver.api.deps import Admin, Context, Supervisor
from appserver.api.menu_guard import checked_delete, checked_write
from appserver.store import agents as agents_repo
from appserver.store import extensions as ext_repo
from appserver.store import members as members_repo
from appserver.store import menus as menus_repo
from appserver.store import queues as queues_repo
from appserver.store import schedules as sched_repo

router = APIRouter(prefix="/api", dependencies=[AuditWrites])  # writes land in audit_log

SlugPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
NumberPath = Annotated[str, Path(pattern=r"^[0-9*#+]{1,32}$")]


def _missing(what: str, name: str) -> HTTPException:
    return HTTPException(404, f"no {what} named {name!r}")


# ---------------------------------------------------------------- menus


def menu_out(m: menus_repo.Menu) -> s.MenuOut:
    data = asdict(m)
    data.pop("id")
    data["options"] = [
        {k: v for k, v in o.items() if k != "id"} for o in data["options"]
    ]
    return s.MenuOut.model_validate(data)


def menu_from_body(name: str, body: s.MenuIn) -> menus_repo.Menu:
    def tup(v: list[str] | None) -> tuple[str, ...] | None:
        return None if v is None else tuple(v)

    data: dict[str, Any] = body.model_dump(exclude={"options"})
    for key in ("greeting", "invalid_prompt", "timeout_prompt"):
        data[key] = tup(data[key])
    options = tuple(
        menus_repo.MenuOption(o.digits, o.action, o.target, tup(o.prompt), o.position)
        for o in body.options
    )
    return menus_repo.Menu(name=name, options=options, **data)


@router.get("/menus", tags=["menus"])
async def list_menus(ctx: Context, _: Supervisor) -> list[s.MenuOut]:
    return [menu_out(m) for m in await menus_repo.list_menus(ctx.pool)]


@router.get("/menus/status", tags=["menus"])
async def menus_status(ctx: Context, _: Supervisor) -> dict[str, Any]:
    """Publication status: live version, when it was published, the last error and the
    issues of the last rejected candidate."""
    from appserver.menus.publisher import MenuPublisher

    return await MenuPublisher(ctx.redis).status()


@router.get("/menus/{name}", tags=["menus"])
async def get_menu(ctx: Context, _: Supervisor, name: SlugPath) -> s.MenuOut:
    menu = await menus_repo.get_menu(ctx.pool, name)
    if menu is None:
        raise _missing("menu", name)
    return menu_out(menu)


@router.put("/menus/{name}", tags=["menus"])
async def put_menu(ctx: Context, who: Admin, name: SlugPath, body: s.MenuIn) -> s.MenuSaved:
    """Create or replace a menu with its options. The whole would-be menu set is validated;
    an error answers 422 naming the menu, option and reason, and nothing is saved."""
    digits = [o.digits for o in body.options]
    if len(set(digits)) != len(digits):
        raise HTTPException(422, "options: each digits value may appear once per menu")
    async with checked_write(ctx.pool, name, digits, actor=who.name) as conn:
        saved = await menus_repo.save_menu(conn, menu_from_body(name, body))
    return s.MenuSaved(**menu_out(saved).model_dump())


@router.delete("/menus/{name}", status_code=204, tags=["menus"])
async def delete_menu(ctx: Context, who: Admin, name: SlugPath) -> Response:
    async with checked_delete(ctx.pool, actor=who.name) as conn:
        if not await menus_repo.delete_menu(conn, name):
            raise _missing("menu", name)
    return Response(status_code=204)


# ---------------------------------------------------------------- schedules


def _schedule_out(x: sched_repo.Schedule) -> s.ScheduleOut:
    data = asdict(x)
    data.pop("id")
    return s.ScheduleOut.model_validate(data)


@router.get("/schedules", tags=["schedules"])
async def list_schedules(ctx: Context, _: Supervisor) -> list[s.ScheduleOut]:
    return [_schedule_out(x) for x in await sched_repo.list_schedules(ctx.pool)]


@router.get("/schedules/{name}", tags=["schedules"])
async def get_schedule(ctx: Context, _: Supervisor, name: SlugPath) -> s.ScheduleOut:
    found = await sched_repo.get_schedule(ctx.pool, name)
    if found is None:
        raise _missing("schedule", name)
    return _schedule_out(found)


@router.put("/schedules/{name}", tags=["schedules"])
async def put_schedule(ctx: Context, _: Admin, name: SlugPath, body: s.ScheduleIn) -> s.ScheduleOut:
    schedule = sched_repo.Schedule(
        name=name,
        timezone=body.timezone,
        description=body.description,
        hours=tuple(sched_repo.Hours(h.weekday, h.opens, h.closes) for h in body.hours),
        closures=tuple(sched_repo.Closure(c.name, c.starts_on, c.ends_on) for c in body.closures),
    )
    async with checked_write(ctx.pool) as conn:
        saved = await sched_repo.save_schedule(conn, schedule)
    return _schedule_out(saved)


@router.delete("/schedules/{name}", status_code=204, tags=["schedules"])
async def delete_schedule(ctx: Context, _: Admin, name: SlugPath) -> Response:
    async with checked_delete(ctx.pool) as conn:
        if not await sched_repo.delete_schedule(conn, name):
            raise _missing("schedule", name)
    return Response(status_code=204)


# ---------------------------------------------------------------- extensions


@router.get("/extensions", tags=["extensions"])
async def list_extensions(ctx: Context, _: Supervisor) -> list[s.ExtensionOut]:
    return [s.ExtensionOut.model_validate(asdict(e)) for e in
            await ext_repo.list_extensions(ctx.pool)]


@router.get("/extensions/{number}", tags=["extensions"])
async def get_extension(ctx: Context, _: Supervisor, number: NumberPath) -> s.ExtensionOut:
    found = await ext_repo.get_extension(ctx.pool, number)
    if found is None:
        raise _missing("extension", number)
    return s.ExtensionOut.model_validate(asdict(found))


@router.put("/extensions/{number}", tags=["extensions"])
async def put_extension(
    ctx: Context, _: Admin, number: NumberPath, body: s.ExtensionIn
) -> s.ExtensionOut:
    async with checked_write(ctx.pool) as conn:
        saved = await ext_repo.save_extension(
            conn, ext_repo.Extension(number, body.kind, body.target, body.description)
        )
    return s.ExtensionOut.model_validate(asdict(saved))


@router.delete("/extensions/{number}", status_code=204, tags=["extensions"])
async def delete_extension(ctx: Context, _: Admin, number: NumberPath) -> Response:
    async with checked_delete(ctx.pool) as conn:
        if not await ext_repo.delete_extension(conn, number):
            raise _missing("extension", number)
    return Response(status_code=204)


# ---------------------------------------------------------------- queues


def _queue_out(q: queues_repo.Queue) -> s.QueueOut:
    data = asdict(q)
    data.pop("id")
    return s.QueueOut.model_validate(data)


@router.get("/queues", tags=["queues"])
async def list_queues(ctx: Context, _: Supervisor) -> list[s.QueueOut]:
    return [_queue_out(q) for q in await queues_repo.list_queues(ctx.pool)]


@router.get("/queues/{name}", tags=["queues"])
async def get_queue(ctx: Context, _: Supervisor, name: SlugPath) -> s.QueueOut:
    found = await queues_repo.get_queue(ctx.pool, name)
    if found is None:
        raise _missing("queue", name)
    return _queue_out(found)


@router.put("/queues/{name}", tags=["queues"])
async def put_queue(ctx: Context, _: Admin, name: SlugPath, body: s.QueueIn) -> s.QueueOut:
    async with checked_write(ctx.pool) as conn:
        saved = await queues_repo.save_queue(conn, queues_repo.Queue(name=name,
                                                                     **body.model_dump()))
    return _queue_out(saved)


@router.delete("/queues/{name}", status_code=204, tags=["queues"])
async def delete_queue(ctx: Context, _: Admin, name: SlugPath) -> Response:
    async with checked_delete(ctx.pool) as conn:
        if not await queues_repo.delete_queue(conn, name):
            raise _missing("queue", name)
    return Response(status_code=204)


@router.get("/queues/{name}/members", tags=["queues"])
async def list_queue_members(ctx: Context, _: Supervisor, name: SlugPath) -> list[s.MemberOut]:
    return [s.MemberOut.model_validate(asdict(m)) for m in
            await members_repo.list_members(ctx.pool, queue=name)]


@router.put("/queues/{name}/members/{agent}", tags=["queues"])
async def put_queue_member(
    ctx: Context, _: Admin, name: SlugPath, agent: SlugPath, body: s.MemberIn
) -> s.MemberOut:
    saved = await members_repo.save_member(
        ctx.pool, members_repo.QueueMember(name, agent, body.tier, body.penalty)
    )
    return s.MemberOut.model_validate(asdict(saved))


@router.delete("/queues/{name}/members/{agent}", status_code=204, tags=["queues"])
async def delete_queue_member(ctx: Context, _: Admin, name: SlugPath, agent: SlugPath) -> Response:
    if not await members_repo.remove_member(ctx.pool, name, agent):
        raise HTTPException(404, f"agent {agent!r} is not a member of queue {name!r}")
    return Response(status_code=204)


# ---------------------------------------------------------------- agents


def _agent_out(a: agents_repo.Agent) -> s.AgentOut:
    return s.AgentOut(
        username=a.username, display_name=a.display_name, kind=a.kind, extension=a.extension,
        role=a.role, skills=a.skills, enabled=a.enabled, has_password=bool(a.password_hash),
        created_at=a.created_at, updated_at=a.updated_at,
    )


@router.get("/agents", tags=["agents"])
async def list_agents(ctx: Context, _: Supervisor) -> list[s.AgentOut]:
    return [_agent_out(a) for a in await agents_repo.list_agents(ctx.pool)]


@router.get("/agents/{username}", tags=["agents"])
async def get_agent(ctx: Context, _: Supervisor, username: SlugPath) -> s.AgentOut:
    found = await agents_repo.get_agent(ctx.pool, username)
    if found is None:
        raise _missing("agent", username)
    return _agent_out(found)


@router.put("/agents/{username}", tags=["agents"])
async def put_agent(ctx: Context, _: Admin, username: SlugPath, body: s.AgentIn) -> s.AgentOut:
    """Create or update an agent. ``password`` sets a new one; omitted, the old one stays."""
    if body.kind == "sip" and body.extension is None:
        raise HTTPException(422, "extension: a sip agent needs an extension to dial")
    password_hash = await hash_password(body.password) if body.password is not None else None
    async with checked_write(ctx.pool) as conn:
        saved = await agents_repo.save_agent(conn, agents_repo.Agent(
            username=username, display_name=body.display_name, kind=body.kind,
            extension=body.extension, role=body.role, skills=body.skills, enabled=body.enabled,
            password_hash=password_hash,
        ))
    return _agent_out(saved)


@router.delete("/agents/{username}", status_code=204, tags=["agents"])
async def delete_agent(ctx: Context, _: Admin, username: SlugPath) -> Response:
    async with checked_delete(ctx.pool) as conn:
        if not await agents_repo.delete_agent(conn, username):
            raise _missing("agent", username)
    return Response(status_code=204)


@router.get("/agents/{username}/queues", tags=["agents"])
async def list_agent_queues(ctx: Context, _: Supervisor, username: SlugPath) -> list[s.MemberOut]:
    return [s.MemberOut.model_validate(asdict(m)) for m in
            await members_repo.list_members(ctx.pool, agent=username)]
