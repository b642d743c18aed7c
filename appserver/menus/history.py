"""Menu history: every menu set that went live is a version, with who made it.

The admin editor records its versions (publish, rollback) in the transaction that writes the
menus. Edits through the REST API or by hand in SQL are logged by a trigger, one row per
transaction in ``menu_edits`` naming who made it (the API's principal, else the SQL user);
once the reloader has compiled and published such a set, :func:`record_published` records it
as an ``edit`` version naming them, so several reloaders record it once. With no version
yet, the set found is recorded as the ``baseline`` the first edit is compared with.
"""

from __future__ import annotations

import asyncpg

from appserver.menus.changes import live_bodies, menu_changes
from appserver.menus.loader import load_source
from appserver.store import menu_drafts as versions_repo
from appserver.store.menu_drafts import MenuBody, MenuVersion
from ivr.model import MenuSource

# Held while the menu tables are written and versions recorded (transaction- or
# session-level): writes are checked one at a time and each set is recorded once.
MENU_WRITE_LOCK = 7_265_283_202

BASELINE_BY = "initial"
BASELINE_NOTE = "the menus as they were when the history began"


async def lock_menus(conn: asyncpg.Connection, actor: str | None) -> None:
    """In a transaction about to write the configuration: wait for other menu writes, and
    name ``actor`` (a username or ``key:<name>``) as the one making its menu edits."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MENU_WRITE_LOCK)
    if actor is not None:
        await versions_repo.set_actor(conn, actor)


def _actors(edits: list[asyncpg.Record]) -> str:
    names = dict.fromkeys(e["actor"] for e in edits)  # distinct, in the order they edited
    return ", ".join(names) or "unknown"


async def record_edits(conn: asyncpg.Connection, live: dict[str, MenuBody], *,
                       baseline: bool = True) -> MenuVersion | None:
    """Record ``live`` (the menus as they are in this transaction, which holds
    MENU_WRITE_LOCK) as an ``edit`` version naming who edited since the latest version;
    with no version yet, as the ``baseline`` (unless ``baseline`` is False). None when it is
    the latest version already. The edits it accounts for leave the log either way."""
    edits = await versions_repo.pending_edits(conn)
    latest = await versions_repo.latest_version(conn)
    version = None
    if latest is None and baseline:
        version = await versions_repo.record_version(
            conn, by=BASELINE_BY, action="baseline", menus=live,
            changes=menu_changes({}, live), note=BASELINE_NOTE)
    elif latest is not None and latest.menus != live:
        version = await versions_repo.record_version(
            conn, by=_actors(edits), action="edit", menus=live,
            changes=menu_changes(latest.menus or {}, live))
    await versions_repo.forget_edits(conn, [e["txid"] for e in edits])
    return version


async def record_published(conn: asyncpg.Connection, published: MenuSource, *,
                           changed: bool = True, lock_wait: float = 5.0
                           ) -> MenuVersion | None:
    """After the reloader published the set compiled from ``published``: record it as a
    version unless one has it already (the editor's, or another reloader's). ``changed``
    False (the set in Redis stayed the same): only if an edit awaits its version.
    TimeoutError when another menu write holds the lock more than ``lock_wait`` seconds.

    Read in one snapshot taken once the lock is held, so an editor's publish that committed
    meanwhile is seen. When the menus changed again since ``published`` was read, nothing is
    recorded: that change NOTIFYs, and the reload it brings records it (if it is valid)."""
    if not changed and not await versions_repo.unrecorded_edits(conn):
        return None
    # A lock won at the very moment of the timeout goes with the connection (pool reset).
    await conn.execute("SELECT pg_advisory_lock($1)", MENU_WRITE_LOCK, timeout=lock_wait)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            if await load_source(conn) != published:
                return None
            return await record_edits(conn, await live_bodies(conn))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MENU_WRITE_LOCK)
