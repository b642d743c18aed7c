"""Who is calling: passwords, signed session tokens, API keys, roles, login rate limit.

* Agents log in with their username and password (argon2 hash in ``agents``, checked in a
  small thread pool, off the event loop) and get a short-lived HS256 token: in the
  ``callyard_session`` cookie for the console, or sent back as ``Authorization: Bearer``.
* The signing secret is ``CALLYARD_API_SECRET``, else a random one in
  ``CALLYARD_DATA_DIR/api-secret`` (0600): never in Redis, which workers and anyone with
  its password (or its files) can read.
* A token dies on logout (its id is revoked in Redis until it would have expired), when the
  agent's password changes (the token carries an HMAC of the password hash), and at the
  latest ``CALLYARD_API_SESSION_TTL`` seconds after it was issued, whatever it claims.
* Automation uses API keys (``cyk_<id>_<secret>``, table ``api_keys``) as a Bearer token.
* Every request re-reads the agent's role and ``enabled`` flag, so disabling an agent or
  changing its role takes effect at once, not when the token expires.
* Login attempts are counted atomically in Redis per account and per client address; too
  many failures in the window answer 429 until it passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
import jwt
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appserver.private_files import private_dir, read_or_create_secret

if TYPE_CHECKING:
    from appserver.settings import Settings

Role = Literal["agent", "supervisor", "admin"]
ROLE_RANK: dict[str, int] = {"agent": 1, "supervisor": 2, "admin": 3}
SESSION_COOKIE = "callyard_session"
KEY_PREFIX = "cyk_"
REVOKED_PREFIX = "callyard:api:revoked:"  # + token id: a session ended by logout
LOGIN_WINDOW = 300  # seconds
LOGIN_MAX_PER_ACCOUNT = 5  # failed (or in-flight) attempts on one username per window
LOGIN_MAX_PER_CLIENT = 20  # failed (or in-flight) attempts from one client address
HASH_THREADS = 2  # argon2 runs here, not on the event loop; more waits its turn
_ALGORITHM = "HS256"
_CLOCK_SKEW = 60  # seconds a token's issue time may lie in the future

_hasher = PasswordHasher()
_hashing = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="argon2")
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    """An argon2 hash of ``password``, computed in the hashing threads."""
    return await asyncio.get_running_loop().run_in_executor(_hashing, _hasher.hash, password)


async def check_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing or malformed hash never matches."""
    return await asyncio.get_running_loop().run_in_executor(
        _hashing, _verify, password_hash, password
    )


@dataclass(frozen=True, slots=True)
class SessionId:
    """Which session token authenticated a request (so logout can revoke it)."""

    token_id: str
    expires: int  # Unix time


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    name: str  # agent username, or "key:<name>" for an API key
    role: Role
    via: Literal["session", "api_key"]
    session: SessionId | None = None

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


def session_secret(settings: Settings) -> str:
    """``CALLYARD_API_SECRET``, else this host's random secret in ``data_dir/api-secret``
    (created 0600 on first use; API processes on other hosts need CALLYARD_API_SECRET)."""
    if settings.api_secret:
        return settings.api_secret
    return read_or_create_secret(private_dir(settings.data_dir) / "api-secret", nbytes=48)


class Sessions:
    """Issues, checks and revokes the signed session tokens of one API deployment."""

    def __init__(self, secret: str, ttl: int, redis: aioredis.Redis) -> None:
        self.secret = secret
        self.ttl = ttl  # the longest a token lives, whatever its claims say
        self.redis = redis

    def _password_mark(self, password_hash: str | None) -> str:
        """Changes when the password does; reveals nothing about it."""
        digest = hmac.new(self.secret.encode(), (password_hash or "").encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def issue(self, username: str, password_hash: str | None, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": username, "typ": "session", "iat": issued, "exp": issued + self.ttl,
            "jti": secrets.token_urlsafe(16), "pwd": self._password_mark(password_hash),
        }
        return jwt.encode(claims, self.secret, algorithm=_ALGORITHM)

    def read(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a validly signed, unexpired token; AuthError(401) otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.secret, algorithms=[_ALGORITHM],
                options={"require": ["sub", "typ", "iat", "exp", "jti", "pwd"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "session expired; log in again") from None
        except jwt.InvalidTokenError:
            raise AuthError(401, "invalid session token") from None
        if claims["typ"] != "session" or not all(
            isinstance(claims[k], str) for k in ("sub", "jti", "pwd")
        ) or not isinstance(claims["iat"], int):
            raise AuthError(401, "invalid session token")
        age = int(now if now is not None else time.time()) - claims["iat"]
        if age > self.ttl:
            raise AuthError(401, "session expired; log in again")
        if age < -_CLOCK_SKEW:
            raise AuthError(401, "invalid session token")
        return claims

    async def check(self, db: asyncpg.Pool, token: str) -> Principal:
        claims = self.read(token)
        if await self.redis.exists(REVOKED_PREFIX + claims["jti"]):
            raise AuthError(401, "this session was logged out; log in again")
        row = await db.fetchrow(
            "SELECT role, enabled, password_hash FROM agents WHERE username = $1", claims["sub"]
        )
        if row is None or not row["enabled"]:
            raise AuthError(401, "this account no longer exists or is disabled")
        if not hmac.compare_digest(claims["pwd"], self._password_mark(row["password_hash"])):
            raise AuthError(401, "the password changed; log in again")
        return Principal(claims["sub"], row["role"], "session",
                         SessionId(claims["jti"], int(claims["exp"])))

    async def revoke(self, session: SessionId) -> None:
        """End ``session`` now (kept in Redis until it would have expired anyway)."""
        if session.expires > time.time():
            await self.redis.set(REVOKED_PREFIX + session.token_id, 1, exat=session.expires)


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
    # Digests, not secrets, are compared; a wrong secret leaves last_used_at alone.
    row = await db.fetchrow(
        "UPDATE api_keys SET last_used_at = now()"
        " WHERE id = $1 AND revoked_at IS NULL AND secret_sha256 = $2 RETURNING name, role",
        int(key_id),
        _digest(secret),
    )
    if row is None:
        raise AuthError(401, "unknown or revoked API key")
    return Principal(f"key:{row['name']}", row["role"], "api_key")


async def authenticate(
    db: asyncpg.Pool, sessions: Sessions, bearer: str | None, cookie: str | None
) -> Principal:
    """The principal for a Bearer credential (token or API key) or the session cookie."""
    if bearer:
        if bearer.startswith(KEY_PREFIX):
            return await check_api_key(db, bearer)
        return await sessions.check(db, bearer)
    if cookie:
        return await sessions.check(db, cookie)
    raise AuthError(401, "log in first (session cookie or Authorization: Bearer)")


# ---------------------------------------------------------------- login

# Counts an attempt on both the account and the client, unless either is at its limit:
# then returns the seconds until it is not. Atomic, so parallel guesses cannot slip past.
_ATTEMPT = """
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then
    wait = math.max(wait, redis.call('TTL', key), 1)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, ARGV[3]) end
end
return 0
"""
# A successful login: the account starts over, the client gets its attempt back.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('DECR', KEYS[2]) <= 0 then
  redis.call('DEL', KEYS[2])
end
return 0
"""


class LoginLimiter:
    """Login attempts per account and per client address in a fixed window, in Redis.

    An attempt counts from the moment it starts; a successful one is handed back. So at
    most ``per_account`` guesses at one password and ``per_client`` from one address are
    ever checked in a window, however many arrive at once.
    """

    def __init__(self, redis: aioredis.Redis, per_account: int = LOGIN_MAX_PER_ACCOUNT,
                 per_client: int = LOGIN_MAX_PER_CLIENT, window: int = LOGIN_WINDOW) -> None:
        self.limits = (per_account, per_client, window)
        self._attempt = redis.register_script(_ATTEMPT)
        self._succeeded = redis.register_script(_SUCCEEDED)

    @staticmethod
    def _keys(username: str, client: str) -> list[str]:
        return [f"callyard:api:login:account:{username.lower()}",
                f"callyard:api:login:client:{client}"]

    async def attempt(self, username: str, client: str) -> int:
        """0 when this attempt may go ahead (it is counted), else the seconds to wait."""
        return int(await self._attempt(keys=self._keys(username, client), args=self.limits))

    async def succeeded(self, username: str, client: str) -> None:
        await self._succeeded(keys=self._keys(username, client))


async def verify_login(
    db: asyncpg.Pool, username: str, password: str
) -> tuple[Principal, str] | None:
    """The agent and their password hash when the username and password match an enabled
    account."""
    row = await db.fetchrow(
        "SELECT username, role, enabled, password_hash FROM agents WHERE username = $1", username
    )
    ok = await check_password(row["password_hash"] if row else None, password)
    if row is None or not ok or not row["enabled"]:
        return None
    return Principal(row["username"], row["role"], "session"), row["password_hash"]
