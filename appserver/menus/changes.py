"""What changed between two menu sets, menu by menu, field by field and key by key.

A menu set here is ``{name: menu}`` with each menu as the REST API shows it (options a list
of objects with ``digits``). The result is JSON-ready, newest value second:

    [{"menu": "main", "change": "changed",
      "fields": {"greeting": [["tts:Hi"], ["tts:Hello"]]},
      "options": [{"digits": "2", "before": null, "after": {...}}]},
     {"menu": "sales", "change": "added"}, {"menu": "old", "change": "removed"}]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from appserver.store.db import Executor
from appserver.store.menu_drafts import MenuBody
from appserver.store.menus import Menu, list_menus

MenuSet = Mapping[str, Mapping[str, Any]]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def menu_body(menu: Menu) -> MenuBody:
    """One menu as the REST API shows it, without its name and timestamp: what drafts,
    versions and the editor compare."""
    data = {k: _plain(v) for k, v in asdict(menu).items()
            if k not in ("id", "name", "updated_at", "options")}
    data["options"] = [{k: _plain(v) for k, v in asdict(o).items() if k != "id"}
                       for o in menu.options]
    return data


async def live_bodies(db: Executor) -> dict[str, MenuBody]:
    """The live menu set (the menu tables) as ``{name: body}``."""
    return {m.name: menu_body(m) for m in await list_menus(db)}


def _options(menu: Mapping[str, Any]) -> dict[str, Any]:
    return {o["digits"]: o for o in menu.get("options") or ()}


def menu_changes(before: MenuSet, after: MenuSet) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None or new is None:
            out.append({"menu": name, "change": "added" if old is None else "removed"})
            continue
        fields = {
            key: [old.get(key), new.get(key)]
            for key in sorted((old.keys() | new.keys()) - {"options"})
            if old.get(key) != new.get(key)
        }
        old_keys, new_keys = _options(old), _options(new)
        options = [
            {"digits": d, "before": old_keys.get(d), "after": new_keys.get(d)}
            for d in sorted(old_keys.keys() | new_keys.keys())
            if old_keys.get(d) != new_keys.get(d)
        ]
        out.append({"menu": name, "change": "changed", "fields": fields, "options": options})
    return out
