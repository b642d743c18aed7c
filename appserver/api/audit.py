"""Audit trail of admin writes (table ``audit_log``, migration 003) and ``GET /api/audit``.

:data:`AuditWrites` is a dependency for routers or routes that write configuration: for
the paths in :data:`AUDITED` it reads the resource before the write and again after it,
and when it changed records who changed it (agent or API key), from which address, and
both versions. A write that fails (4xx, exception) is not recorded. Hand edits in SQL are
recorded by triggers instead (see the migration); Callyard's own connections are not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from appserver.api.auth import Principal, list_api_keys
from appserver.api.deps import Admin, Context, client_address, current_principal
from appserver.store import agents as agents_repo
from appserver.store import extensions as ext_repo
from appserver.store import members as members_repo
from appserver.store import menus as menus_repo
from appserver.store import queues as queues_repo
from appserver.store import schedules as sched_repo

# Bookkeeping, not configuration: left out of before/after.
_NOISE = frozenset({"id", "created_at", "updated_at", "last_used_at"})

Params = dict[str, str]


def _plain(value: Any) -> Any:
    """A repository dataclass as JSON-ready data, without bookkeeping fields."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in _NOISE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _reader(read: Callable[[asyncpg.Pool, Params], Awaitable[Any]]) -> Callable[
        [asyncpg.Pool, Params], Awaitable[dict[str, Any] | None]]:
    async def snapshot(db: asyncpg.Pool, params: Params) -> dict[str, Any] | None:
        found = await read(db, params)
        return None if found is None else _plain(jsonable_encoder(asdict(found)))

    return snapshot


async def _member(db: asyncpg.Pool, p: Params) -> members_repo.QueueMember | None:
    found = await members_repo.list_members(db, queue=p["name"], agent=p["agent"])
    return found[0] if found else None


async def _api_key(db: asyncpg.Pool, p: Params) -> Any:
    return next((k for k in await list_api_keys(db) if k.name == p["name"]), None)


@dataclass(frozen=True)
class Audited:
    resource: str
    snapshot: Callable[[asyncpg.Pool, Params], Awaitable[dict[str, Any] | None]]
    names: tuple[str, ...] = ("name",)  # path parameters naming it, joined with '/'


# Route path -> what its PUT / POST / DELETE writes.
AUDITED: dict[str, Audited] = {
    "/api/menus/{name}": Audited("menu", _reader(lambda db, p: menus_repo.get_menu(
        db, p["name"]))),
    "/api/schedules/{name}": Audited("schedule", _reader(lambda db, p: sched_repo.get_schedule(
        db, p["name"]))),
    "/api/extensions/{number}": Audited("extension", _reader(
        lambda db, p: ext_repo.get_extension(db, p["number"])), ("number",)),
    "/api/queues/{name}": Audited("queue", _reader(lambda db, p: queues_repo.get_queue(
        db, p["name"]))),
    "/api/queues/{name}/members/{agent}": Audited("member", _reader(_member), ("name", "agent")),
    "/api/agents/{username}": Audited("agent", _reader(lambda db, p: agents_repo.get_agent(
        db, p["username"])), ("username",)),
    "/api/keys": Audited("api_key", _reader(_api_key)),  # POST: the name is in the body
    "/api/keys/{name}": Audited("api_key", _reader(_api_key)),
}


async def record_if_changed(
    db: asyncpg.Pool, spec: Audited, params: Params, before: dict[str, Any] | None, *,
    actor: str, via: str, client: str | None,
) -> None:
    """After a write: store an audit entry if the resource changed since ``before``
    (password hashes become "set" / "changed", in SQL)."""
    after = await spec.snapshot(db, params)
    if before == after:
        return
    name = "/".join(params[n] for n in spec.names)
    await record(db, spec.resource, name, before, after, actor=actor, via=via, client=client)


async def record(
    db: asyncpg.Pool, resource: str, name: str, before: dict[str, Any] | None,
    after: dict[str, Any] | None, *, actor: str, via: str, client: str | None,
) -> None:
    """Store one audit entry: created (no ``before``), deleted (no ``after``) or updated."""
    action = "create" if before is None else "delete" if after is None else "update"
    await db.execute(
        "INSERT INTO audit_log (actor, via, client, action, resource, name, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6,"
        " callyard_audit_row($7::text::jsonb, NULL),"
        " callyard_audit_row($8::text::jsonb, $7::text::jsonb))",
        actor, via, client, action, resource, name, _json(before), _json(after),
    )


async def record_action(
    db: asyncpg.Pool, principal: Principal, client: str | None, action: str, resource: str,
    name: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
) -> None:
    """An audit entry for an action that is not a configuration write (a supervisor joining
    a call: ``create``, changing mode: ``update``, leaving: ``delete``)."""
    await db.execute(
        "INSERT INTO audit_log (actor, via, client, action, resource, name, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb)",
        principal.name, principal.via, client, action, resource, name, _json(before),
        _json(after),
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


async def _params(request: Request) -> Params:
    params = {k: str(v) for k, v in request.path_params.items()}
    if "name" not in params:  # POST /api/keys
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            params["name"] = body["name"]
    return params


async def audit_writes(
    request: Request, ctx: Context, principal: Annotated[Principal, Depends(current_principal)]
) -> AsyncIterator[None]:
    """Records an admin's successful write to an audited path (see the module doc)."""
    route = request.scope.get("route")
    spec = AUDITED.get(getattr(route, "path", ""))
    if spec is None or request.method in ("GET", "HEAD") or not principal.has("admin"):
        yield
        return
    params = await _params(request)
    if any(n not in params for n in spec.names):
        yield
        return
    before = await spec.snapshot(ctx.pool, params)
    yield  # the write; an exception (refused, failed) skips the rest
    await record_if_changed(ctx.pool, spec, params, before, actor=principal.name,
                            via=principal.via,
                            client=client_address(request, ctx.settings.trusted_proxies))


# Runs its exit part as soon as the route returns, before the response is sent, so a
# client that reads /api/audit right after its write finds it.
AuditWrites = Depends(audit_writes, scope="function")

# ---------------------------------------------------------------- reading it

router = APIRouter(prefix="/api", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    via: str
    client: str | None
    action: str
    resource: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@router.get("/audit")
async def audit_log(
    ctx: Context,
    _: Admin,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    resource: Annotated[str | None, Query(max_length=32)] = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AuditEntry]:
    """Configuration changes, newest first: ``since`` <= at < ``until``, by ``actor``
    (agent, ``key:<name>``, ``cli:<user>``, ``sql:<role>``), ``resource`` (menu, schedule,
    extension, queue, member, agent, api_key, ...) and ``name``."""
    rows = await ctx.pool.fetch(
        "SELECT * FROM audit_log"
        " WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)"
        " AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR resource = $4)"
        " AND ($5::text IS NULL OR name = $5)"
        " ORDER BY at DESC, id DESC LIMIT $6 OFFSET $7",
        since, until, actor, resource, name, limit, offset,
    )
    return [AuditEntry.model_validate(dict(r)) for r in rows]
