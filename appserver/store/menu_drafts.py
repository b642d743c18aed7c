"""Menu drafts (edited in the admin UI, unheard by callers) and published menu versions.

A draft holds one menu as the REST API takes it (a JSON object), or None for "delete this
menu". Every save takes a new ``revision``; a save naming an older revision is refused with
:class:`DraftConflict`, so two editors never silently overwrite each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from appserver.store.db import Executor, from_jsonb

MenuBody = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Draft:
    name: str
    menu: MenuBody | None  # None: the draft deletes the menu
    revision: int
    base: str | None  # digest of the live menu it started from; None: a new menu
    updated_by: str
    updated_at: datetime


class DraftConflict(Exception):
    """The draft changed since the editor read it; ``current`` is what it is now."""

    def __init__(self, name: str, current: Draft | None) -> None:
        if current is None:
            message = f"the draft of menu {name!r} was published or discarded meanwhile"
        else:
            message = (f"menu {name!r} was saved meanwhile by {current.updated_by} at "
                       f"{current.updated_at:%Y-%m-%d %H:%M:%S %Z} (revision {current.revision})")
        super().__init__(message)
        self.name = name
        self.current = current


def _draft(row: asyncpg.Record) -> Draft:
    return Draft(name=row["name"], menu=from_jsonb(row["menu"]), revision=row["revision"],
                 base=row["base"], updated_by=row["updated_by"], updated_at=row["updated_at"])


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


async def list_drafts(db: Executor) -> list[Draft]:
    return [_draft(r) for r in await db.fetch("SELECT * FROM menu_drafts ORDER BY name")]


async def get_draft(db: Executor, name: str) -> Draft | None:
    row = await db.fetchrow("SELECT * FROM menu_drafts WHERE name = $1", name)
    return _draft(row) if row else None


async def save_draft(
    db: Executor, name: str, menu: MenuBody | None, *, revision: int, base: str | None,
    by: str,
) -> Draft:
    """Save the draft of ``name``. ``revision`` is the one the editor read: 0 when there was
    no draft (``base`` then is the digest of the live menu it started from)."""
    if revision == 0:
        row = await db.fetchrow(
            "INSERT INTO menu_drafts (name, menu, base, updated_by)"
            " VALUES ($1, $2::text::jsonb, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING *",
            name, _json(menu), base, by)
    else:
        row = await db.fetchrow(
            "UPDATE menu_drafts SET menu = $2::text::jsonb, updated_by = $3, updated_at = now(),"
            " revision = nextval('menu_draft_revisions')"
            " WHERE name = $1 AND revision = $4 RETURNING *",
            name, _json(menu), by, revision)
    if row is None:
        raise DraftConflict(name, await get_draft(db, name))
    return _draft(row)


async def discard_draft(db: Executor, name: str, revision: int) -> None:
    """Drop the draft of ``name`` (the live menu stays as it is)."""
    done = await db.fetchval(
        "DELETE FROM menu_drafts WHERE name = $1 AND revision = $2 RETURNING true",
        name, revision)
    if not done:
        raise DraftConflict(name, await get_draft(db, name))


async def delete_drafts(db: Executor, names: list[str]) -> None:
    await db.execute("DELETE FROM menu_drafts WHERE name = ANY($1::text[])", names)


# ---------------------------------------------------------------- published versions


@dataclass(frozen=True, slots=True)
class MenuVersion:
    id: int
    published_at: datetime
    published_by: str
    action: str  # publish | rollback | edit (REST or SQL) | baseline (where history began)
    rollback_of: int | None
    note: str
    changes: list[dict[str, Any]]
    menus: dict[str, MenuBody] | None = None  # left out of listings


def _version(row: asyncpg.Record) -> MenuVersion:
    return MenuVersion(
        id=row["id"], published_at=row["published_at"], published_by=row["published_by"],
        action=row["action"], rollback_of=row["rollback_of"], note=row["note"],
        changes=from_jsonb(row["changes"]),
        menus=from_jsonb(row["menus"]) if "menus" in row else None,
    )


async def record_version(
    db: Executor, *, by: str, action: str, menus: dict[str, MenuBody],
    changes: list[dict[str, Any]], note: str = "", rollback_of: int | None = None,
) -> MenuVersion:
    """Record ``menus`` as the live set. It accounts for the menu edits of this transaction:
    they leave the edit log."""
    await db.execute("DELETE FROM menu_edits WHERE txid = txid_current_if_assigned()")
    row = await db.fetchrow(
        "INSERT INTO menu_versions (published_by, action, rollback_of, note, menus, changes)"
        " VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb) RETURNING *",
        by, action, rollback_of, note, json.dumps(menus), json.dumps(changes))
    return _version(row)


async def list_versions(db: Executor, limit: int = 100, before: int | None = None
                        ) -> list[MenuVersion]:
    """Newest first, without the menus themselves; ``before`` pages on (an id)."""
    rows = await db.fetch(
        "SELECT id, published_at, published_by, action, rollback_of, note, changes"
        " FROM menu_versions WHERE ($2::int IS NULL OR id < $2) ORDER BY id DESC LIMIT $1",
        limit, before)
    return [_version(r) for r in rows]


async def get_version(db: Executor, version_id: int) -> MenuVersion | None:
    row = await db.fetchrow("SELECT * FROM menu_versions WHERE id = $1", version_id)
    return _version(row) if row else None


async def latest_version(db: Executor) -> MenuVersion | None:
    row = await db.fetchrow("SELECT * FROM menu_versions ORDER BY id DESC LIMIT 1")
    return _version(row) if row else None


# ---------------------------------------------------------------- who edited the menus


async def set_actor(db: Executor, actor: str) -> None:
    """Name who makes this transaction's menu edits (``menu_edits.actor``); without it the
    edit log names the SQL user."""
    await db.execute("SELECT set_config('callyard.actor', $1, true)", actor)


async def pending_edits(db: Executor) -> list[asyncpg.Record]:
    """The logged menu edits not yet folded into a version (txid, at, actor), oldest first."""
    return await db.fetch("SELECT txid, at, actor FROM menu_edits ORDER BY at, txid")


async def unrecorded_edits(db: Executor) -> bool:
    """Whether a menu edit awaits its version, or there is no version yet (a cheap check)."""
    return bool(await db.fetchval(
        "SELECT EXISTS (SELECT FROM menu_edits) OR NOT EXISTS (SELECT FROM menu_versions)"))


async def forget_edits(db: Executor, txids: list[int]) -> None:
    """Drop edits a version accounts for."""
    await db.execute("DELETE FROM menu_edits WHERE txid = ANY($1::bigint[])", txids)
