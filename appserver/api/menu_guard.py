"""Configuration writes that can change the menu set are checked before they commit.

The write runs inside a transaction; the menu set is then read back (seeing the write) and
validated with the IVR validator. An error the write introduced rolls everything back and
the API answers 422 naming the menu, option and reason. Errors already present before the
write (e.g. from a hand edit in SQL) do not block unrelated writes, so they can be fixed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from appserver.menus.history import lock_menus
from appserver.menus.loader import load_source
from ivr.validate import Issue, errors, validate


class MenuSetRejected(Exception):
    """The write would break the menu set: 422, or 409 when a delete removed something the
    menus still use."""

    def __init__(self, issues: list[Issue], loc: list[list[Any]], status: int = 422) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = issues
        self.loc = loc
        self.status = status

    def detail(self) -> list[dict[str, Any]]:
        return [
            {
                "loc": loc,
                "msg": str(issue),
                "type": "menu_invalid" if self.status == 422 else "in_use",
                "menu": issue.menu,
                "option": issue.option,
            }
            for issue, loc in zip(self.issues, self.loc, strict=True)
        ]


def _loc(issue: Issue, menu: str | None, option_digits: Sequence[str]) -> list[Any]:
    """Where in the request an issue points: the option's index, the menu body, or another
    menu the write broke."""
    if menu is not None and issue.menu == menu:
        if issue.option is not None and issue.option in option_digits:
            return ["body", "options", list(option_digits).index(issue.option)]
        return ["body"]
    return ["menu", issue.menu] if issue.menu else ["menu_set"]


@asynccontextmanager
async def checked_write(
    pool: asyncpg.Pool, menu: str | None = None, option_digits: Sequence[str] = (),
    status: int = 422, *, actor: str | None = None,
) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction; on exit the menu set is validated and the transaction
    rolled back with :class:`MenuSetRejected` (``status``) if the write added errors.
    ``menu`` and ``option_digits`` describe the menu being written, to point errors at
    request fields; ``actor`` (who is calling) is who the menu history names for it.
    Concurrent checked writes run one at a time (so two edits cannot each pass alone and
    fail together)."""
    async with pool.acquire() as conn, conn.transaction():
        await lock_menus(conn, actor)
        before = {str(i) for i in errors(validate(await load_source(conn)))}
        yield conn
        new = [i for i in errors(validate(await load_source(conn))) if str(i) not in before]
        if new:
            raise MenuSetRejected(new, [_loc(i, menu, option_digits) for i in new], status)


def checked_delete(pool: asyncpg.Pool, *, actor: str | None = None
                   ) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """:func:`checked_write` for a delete: removing what the menus still use is 409."""
    return checked_write(pool, status=409, actor=actor)
