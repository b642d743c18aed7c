"""Every process's Redis clients, made here from ``CALLYARD_REDIS_URL``.

Two URL forms:

* one server: ``redis://[[user]:password@]host:port/db``, ``rediss://...`` (TLS),
  ``unix:///path/redis.sock?db=0`` -- what ``redis.Redis.from_url`` reads;
* Redis Sentinel: ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/service[/db]``
  ``[?sentinel_password=...]`` -- the sentinels to ask (port 26379 when left out), the
  service (master) name, the database (0). The password is the Redis servers'; sentinels
  that have their own (``requirepass`` in sentinel.conf) get ``sentinel_password``.

Through Sentinel a client asks for the current primary on each new connection; after a
failover its commands follow: a command meeting a dead or demoted primary (READONLY) is sent
again by redis-py on a new connection, with backoff, for about ten seconds (:data:`RETRIES`);
a longer outage is an outage, which the queue runtime, the CDR sink and the CDR writer
already ride out. Repeating a command whose reply was lost is safe for what Callyard writes
(the queue scripts are written to be repeated; a CDR appended twice is stored once, by call
id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
SENTINEL_FORM = "redis+sentinel://:password@host1:26379,host2:26379/service/db"
# Through Sentinel, a new connection (to the primary the sentinels name) is tried up to
# RETRIES times, 0.1 s doubling to 0.5 s apart: about 9 s, enough for Sentinel to promote a
# replica when down-after-milliseconds is a few seconds. A command meeting a broken
# connection is sent again on a new one, up to RETRIES times too.
RETRIES = 20
# A bounded pool: a burst of calls waits (up to WAIT_S) for a free connection rather than fail.
MAX_CONNECTIONS = 200
WAIT_S = 10.0

Flavour = Literal["asyncio", "sync"]


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None


def check_url(url: str) -> None:
    """Raise ValueError, naming the expected form, unless ``url`` is one Callyard reads."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL_SCHEME:
        parse_sentinel_url(url)
    elif scheme not in SCHEMES:
        raise ValueError(f"expected redis://host:port/db or {SENTINEL_FORM}")


def parse_sentinel_url(url: str) -> SentinelUrl:
    scheme, _, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME:
        raise ValueError(f"expected {SENTINEL_FORM}")
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"expected {SENTINEL_FORM} (sentinels, service name, database)")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in the Sentinel URL: "
                         "only sentinel_password")
    return SentinelUrl(
        sentinels=tuple(_sentinel(h) for h in hosts.split(",")),
        service=unquote(parts[0]), db=int(parts[1]) if len(parts) == 2 else 0,
        username=unquote(username) or None, password=unquote(password) or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _sentinel(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep or "]" in port:  # no port (an IPv6 address without one ends in "]")
        host, port = item.strip(), str(SENTINEL_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port of a sentinel, got {item!r}")
    return host.strip("[]"), int(port)


def connect(url: str, flavour: Flavour, *, decode_responses: bool = True,
            bounded: bool = False) -> Any:
    """A client for ``url``: ``redis.asyncio.Redis`` or ``redis.Redis`` (``flavour``).
    ``bounded``: at most :data:`MAX_CONNECTIONS`, waiting for a free one (workers).
    Imports redis only here: settings import this module before gevent patches sockets."""
    from redis.backoff import ExponentialBackoff
    from redis.maint_notifications import MaintNotificationsConfig

    if flavour == "asyncio":
        import redis.asyncio as lib
        import redis.asyncio.sentinel as sentinel_lib
        from redis.asyncio.retry import Retry
    else:
        import redis as lib  # type: ignore[no-redef]
        import redis.sentinel as sentinel_lib  # type: ignore[no-redef]
        from redis.retry import Retry  # type: ignore[assignment]
    # No maintenance notifications (Redis Cloud / Enterprise only; on by default over RESP3):
    # with them on, redis-py 8.1's asyncio pool hands out a connection the server closed
    # (e.g. across a Redis restart) without reconnecting, and its next command fails with
    # "Connection closed by server" (redis/redis-py#4252).
    options: dict[str, Any] = {"decode_responses": decode_responses,
                               "maint_notifications_config": MaintNotificationsConfig(False)}
    if bounded:
        options |= {"max_connections": MAX_CONNECTIONS, "timeout": WAIT_S}
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        pool_class = lib.BlockingConnectionPool if bounded else lib.ConnectionPool
        return lib.Redis.from_pool(pool_class.from_url(url, **options))
    target = parse_sentinel_url(url)
    # On ConnectionError / TimeoutError (redis-py's defaults).
    options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES)
    sentinel_pool: Any = (_blocking_sentinel_pool(sentinel_lib, lib) if bounded
                          else sentinel_lib.SentinelConnectionPool)
    manager = sentinel_lib.Sentinel(list(target.sentinels), sentinel_kwargs={
        "password": target.sentinel_password, "socket_timeout": 2.0})
    return lib.Redis.from_pool(sentinel_pool(
        target.service, manager, db=target.db, username=target.username,
        password=target.password, **options))


_BLOCKING_SENTINEL_POOLS: dict[str, type] = {}


def _blocking_sentinel_pool(sentinel_lib: Any, lib: Any) -> type:
    """Sentinel's pool with the blocking pool's bound (redis-py has no such class)."""
    name = lib.__name__
    if name not in _BLOCKING_SENTINEL_POOLS:
        _BLOCKING_SENTINEL_POOLS[name] = type(
            "BlockingSentinelConnectionPool",
            (sentinel_lib.SentinelConnectionPool, lib.BlockingConnectionPool), {})
    return _BLOCKING_SENTINEL_POOLS[name]
