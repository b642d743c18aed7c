"""Log in and out; API keys for automation (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from appserver.api import schemas as s
from appserver.api.audit import AuditWrites
from appserver.api.auth import (
    SESSION_COOKIE,
    Principal,
    create_api_key,
    list_api_keys,
    revoke_api_key,
    verify_login,
)
from appserver.api.deps import Admin, Context, client_address, current_principal
from appserver.api.deps import require as require_role

router = APIRouter(prefix="/api", tags=["auth"])


@router.post("/auth/login")
async def login(
    ctx: Context, body: s.LoginIn, request: Request, response: Response
) -> s.SessionOut:
    """Check a username and password; the session comes back as a cookie and as a token
    for ``Authorization: Bearer``. Repeated failures on one account or from one client
    address answer 429 with Retry-After."""
    client = client_address(request, ctx.settings.trusted_proxies)
    wait = await ctx.limiter.attempt(body.username, client)
    if wait:
        raise HTTPException(
            429, f"too many failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    found = await verify_login(ctx.pool, body.username, body.password)
    if found is None:
        raise HTTPException(401, "wrong username or password, or the account is disabled")
    principal, password_hash = found
    await ctx.limiter.succeeded(body.username, client)
    ttl = ctx.sessions.ttl
    token = ctx.sessions.issue(principal.name, password_hash)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/",
    )
    return s.SessionOut(username=principal.name, role=principal.role, token=token, expires_in=ttl)


@router.post("/auth/logout", status_code=204)
async def logout(
    ctx: Context, principal: Annotated[Principal, Depends(require_role("agent"))],
    response: Response,
) -> Response:
    """End this session: its token stops working at once (cookie or Bearer alike)."""
    if principal.session is not None:
        await ctx.sessions.revoke(principal.session)
    response.status_code = 204
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me")
async def me(principal: Annotated[Principal, Depends(require_role("agent"))]) -> s.Me:
    return s.Me(name=principal.name, role=principal.role, via=principal.via)


@router.get("/keys")
async def keys(ctx: Context, _: Admin) -> list[s.ApiKeyOut]:
    return [s.ApiKeyOut(name=k.name, role=k.role, created_at=k.created_at,
                        last_used_at=k.last_used_at, revoked_at=k.revoked_at)
            for k in await list_api_keys(ctx.pool)]


@router.post("/keys", status_code=201, dependencies=[AuditWrites])
async def new_key(ctx: Context, _: Admin, body: s.ApiKeyIn) -> s.ApiKeyCreated:
    """Create an API key. The key is in this response only; store it now."""
    key, text = await create_api_key(ctx.pool, body.name, body.role)
    return s.ApiKeyCreated(name=key.name, role=key.role, created_at=key.created_at, key=text)


@router.delete("/keys/{name}", status_code=204, dependencies=[AuditWrites])
async def revoke_key(ctx: Context, _: Admin, name: str) -> Response:
    if len(name) > 63 or not await revoke_api_key(ctx.pool, name):
        raise HTTPException(404, f"no active API key named {name!r}")
    return Response(status_code=204)


__all__ = ["current_principal", "router"]
