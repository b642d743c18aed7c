"""The Lua scripts behind every queue and agent transition.

Each ``lua/<name>.lua`` is prefixed with ``lua/common.lua`` and registered with redis-py's
``register_script`` (EVALSHA, falling back to SCRIPT LOAD), which works for both
``redis.Redis`` (gevent) and ``redis.asyncio.Redis``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

SCRIPT_NAMES = (
    "enqueue", "match", "accept", "decline", "dial_failed", "finish", "leave", "tick", "reap",
    "takeover", "agent", "call_control", "sync_queue", "drop_queue", "sync_agent", "drop_agent",
    "stats", "supervise", "today", "move", "hangup", "callback_request", "callback_claim",
    "callback_result", "callback_answered",
)


@cache
def source(name: str) -> str:
    if name not in SCRIPT_NAMES:
        raise KeyError(f"no queue script {name!r}")
    lua = resources.files("appserver.queues") / "lua"
    common = (lua / "common.lua").read_text("utf-8")
    return common + "\n" + (lua / f"{name}.lua").read_text("utf-8")


def register(client: Any) -> dict[str, Any]:
    """Script objects for ``client`` (sync or asyncio), by name."""
    return {name: client.register_script(source(name)) for name in SCRIPT_NAMES}
