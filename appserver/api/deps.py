"""FastAPI dependencies: the caller's identity and role checks.

Every non-public route depends on :func:`require` with the least role it allows
(agent < supervisor < admin); ``tests/test_api_auth.py`` enumerates the routes to keep it so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from appserver.api.auth import SESSION_COOKIE, AuthError, Principal, Role, authenticate
from appserver.api.context import ApiContext, get_context

_bearer = HTTPBearer(auto_error=False, description="Session token or API key (cyk_...)")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Console session")

Context = Annotated[ApiContext, Depends(get_context)]


async def current_principal(
    ctx: Context,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    return await authenticate(
        ctx.pool, ctx.secret, bearer.credentials if bearer else None, cookie
    )


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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
