"""Publish compiled menu sets to Redis with a monotonic version, or record why not.

Publication is one Lua script, so readers never see a version number without its JSON and
two publishers cannot interleave. A menu set whose digest equals the live one is not
published again (the version stays), which keeps unrelated NOTIFYs from churning versions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from appserver.menus import keys
from ivr.compile import MenuSet
from ivr.validate import Issue

log = logging.getLogger("callyard.menus")

# KEYS: current, sequence, status. ARGV: digest, json-with-placeholder, now, warnings,
# old version ttl, key prefix, channel.
# The JSON carries the version; it is written with "__VERSION__" and patched here.
_PUBLISH = """
local current = redis.call('GET', KEYS[1])
if current and redis.call('HGET', KEYS[3], 'digest') == ARGV[1]
   and redis.call('EXISTS', ARGV[6] .. ':v' .. current) == 1 then
  redis.call('HSET', KEYS[3], 'checked_at', ARGV[3], 'last_error', '', 'errors', '[]')
  return {0, tonumber(current)}
end
local version = redis.call('INCR', KEYS[2])
local doc = string.gsub(ARGV[2], '"version":0,', '"version":' .. version .. ',', 1)
redis.call('SET', ARGV[6] .. ':v' .. version, doc)
if current then
  redis.call('EXPIRE', ARGV[6] .. ':v' .. current, tonumber(ARGV[5]))
end
redis.call('SET', KEYS[1], version)
redis.call('HSET', KEYS[3], 'version', version, 'digest', ARGV[1], 'published_at', ARGV[3],
           'checked_at', ARGV[3], 'last_error', '', 'errors', '[]', 'warnings', ARGV[4])
redis.call('PUBLISH', ARGV[7], version)
return {1, version}
"""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MenuPublisher:
    """Writes menu sets and the publication status (see :mod:`appserver.menus.keys`)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_PUBLISH)

    async def publish(self, menuset: MenuSet) -> tuple[bool, int]:
        """Publish ``menuset``; returns (published, live version).

        ``published`` is False when the live version already has the same content.
        """
        now = _now()
        doc = menuset.with_version(0, now).to_json()
        if '"version":0,' not in doc:  # to_dict() puts "version" right after "format"
            raise RuntimeError("unexpected menu set JSON layout")
        published, version = await self._script(
            keys=[keys.CURRENT, keys.SEQUENCE, keys.STATUS],
            args=[
                menuset.digest,
                doc,
                now,
                json.dumps(list(menuset.warnings)),
                keys.OLD_VERSION_TTL,
                keys.PREFIX,
                keys.CHANNEL,
            ],
        )
        if published:
            log.info(
                "menu set published",
                extra={
                    "version": int(version),
                    "digest": menuset.digest,
                    "warnings": len(menuset.warnings),
                },
            )
        return bool(published), int(version)

    async def record_error(self, message: str, issues: Iterable[Issue] = ()) -> None:
        """Record a rejected candidate; the live version is left untouched."""
        now = _now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.STATUS,
                mapping={
                    "last_error": message,
                    "last_error_at": now,
                    "checked_at": now,
                    "errors": json.dumps([i.to_dict() for i in issues]),
                },
            )
            pipe.hincrby(keys.STATUS, "error_count", 1)
            await pipe.execute()

    async def status(self) -> dict[str, Any]:
        """The status hash, decoded: version (int or None), errors and warnings as lists."""
        return decode_status(await self.redis.hgetall(keys.STATUS))


def decode_status(raw: Mapping[Any, Any]) -> dict[str, Any]:
    status = {_text(k): _text(v) for k, v in raw.items()}
    out: dict[str, Any] = dict(status)
    out["version"] = int(status["version"]) if status.get("version") else None
    out["error_count"] = int(status.get("error_count") or 0)
    out["errors"] = json.loads(status.get("errors") or "[]")
    out["warnings"] = json.loads(status.get("warnings") or "[]")
    out.setdefault("last_error", "")
    return out
