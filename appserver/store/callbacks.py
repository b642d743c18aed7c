"""Callback history: one row per callback (``callbacks``) and per call to its customer
(``callback_attempts``), from the events the queue scripts append to the Redis stream
``{callyard:q}:callbacks:history`` (see ``queues/lua/common.lua`` ``callback_history``).

Each event is applied idempotently (a redelivered one changes nothing), in stream order.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from appserver.queues.model import KEY_PREFIX
from appserver.store.db import Executor

HISTORY_STREAM = f"{KEY_PREFIX}callbacks:history"


def _at(ms: str) -> datetime:
    return datetime.fromtimestamp(int(float(ms)) / 1000, UTC)


async def apply_event(db: Executor, e: Mapping[str, str]) -> None:
    """Apply one history event (fields as the scripts wrote them)."""
    call_id, event, at = e["callback"], e["event"], _at(e["at"])
    attempt = int(e.get("attempt") or 0)
    if event == "requested":
        await db.execute(
            "INSERT INTO callbacks (call_id, queue, number, requested_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (call_id) DO NOTHING", call_id, e["queue"], e["number"], at)
    elif event == "dialing":
        await db.execute(
            "UPDATE callbacks SET attempts = GREATEST(attempts, $2), agent = $3,"
            " updated_at = now() WHERE call_id = $1", call_id, attempt, e.get("agent", ""))
        await db.execute(
            "INSERT INTO callback_attempts (call_id, attempt, agent, worker, started_at)"
            " SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM callbacks WHERE call_id = $1)"
            " ON CONFLICT (call_id, attempt) DO NOTHING",
            call_id, attempt, e.get("agent", ""), e.get("worker", ""), at)
    elif event == "attempt":
        await db.execute(
            "UPDATE callback_attempts SET ended_at = $3, outcome = $4, cause = $5"
            " WHERE call_id = $1 AND attempt = $2",
            call_id, attempt, at, e.get("outcome", "failed"), e.get("cause", ""))
    elif event in ("answered", "failed"):
        await db.execute(
            "UPDATE callbacks SET status = $2, finished_at = $3, answered_call_id = $4,"
            " updated_at = now() WHERE call_id = $1",
            call_id, event, at, e.get("channel") or None)
    else:
        raise ValueError(f"unknown callback history event {event!r}")
