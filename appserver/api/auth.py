"""Who is calling: passwords, signed session tokens, API keys, roles, login rate limit.

* Agents log in with their username and password (argon2 hash in ``agents``) and get a
  short-lived HS256 token: in the ``callyard_session`` cookie for the console, or sent back
  as ``Authorization: Bearer <token>`` by scripts.
* Automation uses API keys (``cyk_<id>_<secret>``, table ``api_keys``) as a Bearer token.
* Every request re-reads the agent's role and ``enabled`` flag, so disabling an agent or
  changing its role takes effect at once, not when the token expires.
* Failed logins are counted per username and client address in Redis; too many in the
  window answer 429 until it passes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import jwt
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

Role = Literal["agent", "supervisor", "admin"]
ROLE_RANK: dict[str, int] = {"agent": 1, "supervisor": 2, "admin": 3}
SESSION_COOKIE = "callyard_session"
KEY_PREFIX = "cyk_"
SECRET_KEY = "callyard:api:secret"
LOGIN_WINDOW = 300  # seconds
LOGIN_MAX_FAILURES = 5
_ALGORITHM = "HS256"

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing or malformed hash never matches."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    name: str  # agent username, or "key:<name>" for an API key
    role: Role
    via: Literal["session", "api_key"]

    @property
    def agent(self) -> str | None:
        """The agent username when a person (not an API key) is calling."""
        return self.name if self.via == "session" else None

    def has(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class AuthError(Exception):
    """Not authenticated (401) or not allowed (403); ``detail`` says which and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# ---------------------------------------------------------------- session tokens


async def shared_secret(redis: aioredis.Redis, configured: str | None) -> str:
    """The signing secret: the configured one, else one random secret kept in Redis so
    every API process accepts the others' tokens."""
    if configured:
        return configured
    await redis.set(SECRET_KEY, secrets.token_urlsafe(48), nx=True)
    value = await redis.get(SECRET_KEY)
    if not value:
        raise RuntimeError("could not store the session secret in Redis")
    return str(value)


def issue_session(secret: str, username: str, ttl: int, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims = {"sub": username, "typ": "session", "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def read_session(secret: str, token: str) -> str:
    """The username in a valid, unexpired session token; AuthError(401) otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "exp", "typ"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "session expired; log in again") from None
    except jwt.InvalidTokenError:
        raise AuthError(401, "invalid session token") from None
    if claims.get("typ") != "session" or not isinstance(claims.get("sub"), str):
        raise AuthError(401, "invalid session token")
    return str(claims["sub"])


# ---------------------------------------------------------------- API keys


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    role: Role
    created_at: Any = None
    last_used_at: Any = None
    revoked_at: Any = None


async def create_api_key(db: asyncpg.Pool, name: str, role: Role = "admin") -> tuple[ApiKey, str]:
    """Create a key; returns it and the full key text, which is not stored anywhere."""
    secret = secrets.token_urlsafe(32)
    row = await db.fetchrow(
        "INSERT INTO api_keys (name, secret_sha256, role) VALUES ($1, $2, $3) RETURNING *",
        name,
        _digest(secret),
        role,
    )
    return _key(row), f"{KEY_PREFIX}{row['id']}_{secret}"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        row["id"], row["name"], row["role"], row["created_at"], row["last_used_at"],
        row["revoked_at"],
    )


async def list_api_keys(db: asyncpg.Pool) -> list[ApiKey]:
    return [_key(r) for r in await db.fetch("SELECT * FROM api_keys ORDER BY name")]


async def revoke_api_key(db: asyncpg.Pool, name: str) -> bool:
    result = await db.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL"
        " RETURNING true",
        name,
    )
    return result is True


async def check_api_key(db: asyncpg.Pool, key: str) -> Principal:
    key_id, sep, secret = key.removeprefix(KEY_PREFIX).partition("_")
    if not sep or not key_id.isdigit() or len(key_id) > 9 or not secret:
        raise AuthError(401, "malformed API key")
    row = await db.fetchrow(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND revoked_at IS NULL"
        " RETURNING name, role, secret_sha256",
        int(key_id),
    )
    if row is None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
        raise AuthError(401, "unknown or revoked API key")
    return Principal(f"key:{row['name']}", row["role"], "api_key")


async def check_session(db: asyncpg.Pool, secret: str, token: str) -> Principal:
    username = read_session(secret, token)
    row = await db.fetchrow("SELECT role, enabled FROM agents WHERE username = $1", username)
    if row is None or not row["enabled"]:
        raise AuthError(401, "this account no longer exists or is disabled")
    return Principal(username, row["role"], "session")


async def authenticate(
    db: asyncpg.Pool, secret: str, bearer: str | None, cookie: str | None
) -> Principal:
    """The principal for a Bearer credential (token or API key) or the session cookie."""
    if bearer:
        if bearer.startswith(KEY_PREFIX):
            return await check_api_key(db, bearer)
        return await check_session(db, secret, bearer)
    if cookie:
        return await check_session(db, secret, cookie)
    raise AuthError(401, "log in first (session cookie or Authorization: Bearer)")


# ---------------------------------------------------------------- login


class LoginLimiter:
    """Failed logins per (username, client address) in a fixed window, in Redis."""

    def __init__(self, redis: aioredis.Redis, max_failures: int = LOGIN_MAX_FAILURES,
                 window: int = LOGIN_WINDOW) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window = window

    def _key(self, username: str, address: str) -> str:
        return f"callyard:api:login:{username.lower()}:{address}"

    async def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed (0: allowed now)."""
        key = self._key(username, address)
        failures = await self.redis.get(key)
        if failures is None or int(failures) < self.max_failures:
            return 0
        return max(1, int(await self.redis.ttl(key)))

    async def failed(self, username: str, address: str) -> None:
        key = self._key(username, address)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=self.window, nx=True)  # the window starts at the first failure
            pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, username: str, address: str) -> None:
        await self.redis.delete(self._key(username, address))


async def verify_login(db: asyncpg.Pool, username: str, password: str) -> Principal | None:
    """The agent when the username and password match an enabled account."""
    row = await db.fetchrow(
        "SELECT username, role, enabled, password_hash FROM agents WHERE username = $1", username
    )
    ok = check_password(row["password_hash"] if row else None, password)
    if row is None or not ok or not row["enabled"]:
        return None
    return Principal(row["username"], row["role"], "session")
