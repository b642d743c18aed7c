"""FastAPI dependencies: the caller's identity and role checks.

Every non-public route depends on :func:`require` with the least role it allows
(agent < supervisor < admin); ``tests/test_api_auth.py`` enumerates the routes to keep it so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from appserver.api.auth import SESSION_COOKIE, AuthError, Principal, Role, authenticate
from appserver.api.context import ApiContext, get_context
from appserver.settings import Network

_bearer = HTTPBearer(auto_error=False, description="Session token or API key (cyk_...)")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Console session")

Context = Annotated[ApiContext, Depends(get_context)]


async def current_principal(
    ctx: Context,
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    principal = await authenticate(
        ctx.pool, ctx.sessions, bearer.credentials if bearer else None, cookie
    )
    request.state.principal = principal  # for the access log
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers with at least ``role``."""

    async def check(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if not principal.has(role):
            raise AuthError(403, f"this needs the {role} role; you are {principal.role}")
        return principal

    check.required_role = role  # type: ignore[attr-defined]  # read by the route audit test
    return check


def require_agent_session() -> Callable[..., Awaitable[Principal]]:
    """A person logged in (any role): console actions act on their own agent."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.agent is None:
            raise AuthError(403, "console actions need an agent's session, not an API key")
        return principal

    check.required_role = "agent"  # type: ignore[attr-defined]
    return check


Admin = Annotated[Principal, Depends(require("admin"))]
Supervisor = Annotated[Principal, Depends(require("supervisor"))]
AgentSession = Annotated[Principal, Depends(require_agent_session())]


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(conn: HTTPConnection, proxies: Sequence[Network]) -> str:
    """The client's address: the TCP peer, unless that is one of ``proxies``
    (CALLYARD_TRUSTED_PROXIES); then the nearest X-Forwarded-For hop that is not a trusted
    proxy. Hops an untrusted party wrote (further left) are never believed."""
    peer = conn.client.host if conn.client else "unknown"
    if not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in conn.headers.getlist("x-forwarded-for")
            for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer
