"""Menu drafts, publication and history: what the admin UI's menu editor stands on.

* ``GET /api/menu-drafts`` -- every menu, live and drafted, with the issues of the set as it
  would be published and the live version (Redis).
* ``POST /api/menu-drafts/validate`` -- the issues of the set with some unsaved menus in it
  (the editor calls it as you type): every error with its menu, option and field.
* ``PUT /api/menu-drafts/{name}`` / ``DELETE`` -- save or discard one menu's draft; a stale
  ``revision`` answers 409 naming who saved it meanwhile.
* ``POST /api/menu-drafts/publish`` -- write the drafts into the menu tables in one
  transaction (the path of a SQL edit: NOTIFY, compile, new Redis version) and record the
  whole set as a version; refused (422) while the set has an error, and (409) when the drafts
  or the live menus they started from changed since the editor read them.
* ``POST /api/menu-drafts/try`` -- a call into the draft replayed in the IVR machine, no
  engine (works anywhere); ``POST /api/menu-drafts/trial-calls`` -- a trial number whose
  calls walk the draft through a worker and its engine (``callyard dev``'s softphone).
* ``GET /api/menu-versions``, ``GET /api/menu-versions/{id}``,
  ``POST /api/menu-versions/{id}/rollback`` -- history (REST and SQL edits too: see
  :mod:`appserver.menus.history`), and making an old version live again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import Field, ValidationError

from appserver.api import schemas as s
from appserver.api.admin_routes import SlugPath, menu_from_body
from appserver.api.audit import AUDITED, record_if_changed
from appserver.api.auth import Principal
from appserver.api.context import ApiContext
from appserver.api.deps import Admin, Context, Supervisor, client_address
from appserver.menus.changes import live_bodies, menu_body, menu_changes
from appserver.menus.history import lock_menus, record_edits
from appserver.menus.loader import load_source, menu_def
from appserver.menus.publisher import MenuPublisher
from appserver.menus.trial import run_trial
from appserver.menus.trial_calls import store_trial
from appserver.store import menu_drafts as drafts_repo
from appserver.store import menus as menus_repo
from appserver.store.menu_drafts import Draft, DraftConflict, MenuBody
from ivr.model import MenuDef, MenuSource, OptionDef
from ivr.validate import Issue, errors, validate

router = APIRouter(prefix="/api", tags=["menu editor"])

MAX_NOTE = 1000


class DraftIn(s.Strict):
    revision: int = Field(ge=0, description="the draft revision you read; 0: there was none")
    base: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        None, description="with revision 0: live_digest of the menu you started from")
    menu: s.MenuIn | None = Field(description="the menu; null: publishing deletes it")


class CandidateIn(s.Strict):
    menus: dict[s.Slug, dict[str, Any] | None] = Field(
        {}, max_length=500, description="unsaved menus (null: deleted) laid over the drafts")


class PublishIn(s.Strict):
    revisions: dict[str, int] = Field(
        max_length=500, description="the draft revisions you reviewed: {menu: revision}")
    note: Annotated[str, Field(max_length=MAX_NOTE)] = ""


class TrialIn(CandidateIn):
    menu: s.Slug = Field(description="the menu the simulated call enters")


class TrialStepsIn(TrialIn):
    steps: list[Annotated[str, Field(pattern=r"^([0-9*#]{1,20}|silence)$")]] = Field(
        [], max_length=100, description='the caller\'s keys so far, or "silence"')


class RollbackIn(s.Strict):
    note: Annotated[str, Field(max_length=MAX_NOTE)] = ""


# ---------------------------------------------------------------- the set being edited


def digest(body: MenuBody | None) -> str | None:
    """What a draft records of the live menu it started from: any change to the menu or
    its options (by SQL too, which may leave ivr_menus.updated_at alone) changes it."""
    if body is None:
        return None
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _overlay(live: Mapping[str, MenuBody], drafts: Mapping[str, MenuBody | None]
             ) -> dict[str, MenuBody]:
    merged = {**live, **drafts}
    return {name: body for name, body in sorted(merged.items()) if body is not None}


def _options_of(raw: MenuBody) -> list[Any]:
    listed = raw.get("options")
    return listed if isinstance(listed, list) else []


_FIELD_IN_MESSAGE = re.compile(r"^(?:Value error, )?(\w+): ")


def _schema_issues(name: str, raw: MenuBody, exc: ValidationError) -> list[Issue]:
    """pydantic's complaints about one menu as issues naming the option and field."""
    options = _options_of(raw)
    out = []
    for error in exc.errors():
        loc, message = error["loc"], error["msg"]
        option = field = None
        if loc[:1] == ("options",) and len(loc) > 1 and isinstance(loc[1], int):
            found = options[loc[1]] if loc[1] < len(options) else None
            option = str(found.get("digits")) if isinstance(found, dict) else str(loc[1])
            field = str(loc[2]) if len(loc) > 2 else (
                "prompt" if "prompt" in message else "target")
        elif loc:
            field = str(loc[0])
        elif m := _FIELD_IN_MESSAGE.match(message):
            field = m[1]
        out.append(Issue("error", message.removeprefix("Value error, "), name, option, field))
    return out


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _rough_def(name: str, raw: MenuBody) -> MenuDef:
    """A menu the schema refused, read as far as it goes, so the IVR validator can still
    say what else is wrong with it and menus pointing at it still find it."""
    defaults = MenuDef(name=name)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(MenuDef):
        value = raw.get(f.name)
        default = getattr(defaults, f.name)
        if f.name in ("name", "options") or value is None:
            continue
        if isinstance(default, tuple):
            values[f.name] = _texts(value)
        elif isinstance(default, int | float):
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[f.name] = value
        elif isinstance(value, str):  # text fields, some optional (default None)
            values[f.name] = value
    options = _options_of(raw)
    values["options"] = tuple(
        OptionDef(str(o.get("digits") or ""), str(o.get("action") or ""),
                  str(o.get("target") or ""), _texts(o.get("prompt")))
        for o in options if isinstance(o, dict))
    return MenuDef(name=name, **values)


def check_set(source: MenuSource, bodies: Mapping[str, MenuBody]) -> list[Issue]:
    """Every issue of ``source`` with its menus replaced by ``bodies``: what the API schema
    refuses, then what the IVR validator (the one the server compiles with) finds besides."""
    defs: list[MenuDef] = []
    refused: list[Issue] = []
    for name, raw in bodies.items():
        try:
            defs.append(menu_def(menu_from_body(name, s.MenuIn.model_validate(raw))))
        except ValidationError as exc:
            refused += _schema_issues(name, raw, exc)
            defs.append(_rough_def(name, raw))
    told = {(i.menu, i.option, i.field) for i in refused}
    issues = validate(dataclasses.replace(source, menus=tuple(defs)))
    return refused + [i for i in issues if (i.menu, i.option, i.field) not in told]


@dataclasses.dataclass
class EditorState:
    live: dict[str, menus_repo.Menu]
    drafts: dict[str, Draft]
    source: MenuSource

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> EditorState:
        return cls(
            live={m.name: m for m in await menus_repo.list_menus(conn)},
            drafts={d.name: d for d in await drafts_repo.list_drafts(conn)},
            source=await load_source(conn),
        )

    def live_bodies(self) -> dict[str, MenuBody]:
        return {name: menu_body(m) for name, m in self.live.items()}

    def candidate(self, unsaved: Mapping[str, MenuBody | None] | None = None
                  ) -> dict[str, MenuBody]:
        drafted = {name: d.menu for name, d in self.drafts.items()}
        return _overlay(self.live_bodies(), {**drafted, **(unsaved or {})})

    def issues(self, unsaved: Mapping[str, MenuBody | None] | None = None) -> list[Issue]:
        return check_set(self.source, self.candidate(unsaved))


def _issues_out(issues: list[Issue]) -> list[dict[str, Any]]:
    return [i.to_dict() for i in issues]


def _conflict(message: str, **more: Any) -> HTTPException:
    return HTTPException(409, jsonable_encoder({"code": "conflict", "message": message, **more}))


def _draft_out(draft: Draft) -> dict[str, Any]:
    return {"revision": draft.revision, "base": draft.base, "updated_by": draft.updated_by,
            "updated_at": draft.updated_at, "menu": draft.menu}


def _entry(name: str, state: EditorState) -> dict[str, Any]:
    live, draft = state.live.get(name), state.drafts.get(name)
    status = ("live" if draft is None else "new" if live is None
              else "deleted" if draft.menu is None else "changed")
    return {
        "name": name,
        "status": status,
        "live": menu_body(live) if live else None,
        "live_updated_at": live.updated_at if live else None,
        "live_digest": digest(menu_body(live)) if live else None,
        "draft": _draft_out(draft) if draft else None,
    }


@router.get("/menu-drafts")
async def editor_state(ctx: Context, _: Supervisor) -> dict[str, Any]:
    """Every menu (live, with its draft if any), the issues of the set as publishing would
    make it, and the live version in Redis with the last publication error."""
    async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
        state = await EditorState.read(conn)
    names = sorted(state.live.keys() | state.drafts.keys())
    return {
        "menus": [_entry(n, state) for n in names],
        "issues": _issues_out(state.issues()),
        "status": await MenuPublisher(ctx.redis).status(),
    }


@router.post("/menu-drafts/validate")
async def validate_candidate(ctx: Context, _: Admin, body: CandidateIn) -> dict[str, Any]:
    """The issues of the set as it would be with ``menus`` (unsaved edits, null: deleted)
    laid over the saved drafts. Nothing is stored."""
    async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
        state = await EditorState.read(conn)
    issues = state.issues(body.menus)
    return {"valid": not errors(issues), "issues": _issues_out(issues)}


async def _candidate_source(ctx: ApiContext, body: TrialIn) -> MenuSource:
    """The set with ``body.menus`` laid over the drafts, checked as publishing would check
    it (422 with every error; 404 if ``body.menu`` is not in it)."""
    async with ctx.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
        state = await EditorState.read(conn)
    candidate = state.candidate(body.menus)
    if body.menu not in candidate:
        raise HTTPException(404, f"no menu named {body.menu!r} in the draft")
    issues = check_set(state.source, candidate)
    if errors(issues):
        raise _rejected(issues, "cannot try it")
    menus = tuple(menu_def(menu_from_body(n, s.MenuIn.model_validate(b)))
                  for n, b in candidate.items())
    return dataclasses.replace(state.source, menus=menus)


@router.post("/menu-drafts/try")
async def try_candidate(ctx: Context, _: Admin, body: TrialStepsIn) -> dict[str, Any]:
    """A simulated call into ``menu`` of the set with ``menus`` laid over the drafts, after
    the caller's ``steps``, replayed in the IVR machine without an engine: what the caller
    heard, in order, and where the call is. 422 while the set has an error (as publishing
    would be)."""
    trial = run_trial(await _candidate_source(ctx, body), body.menu, body.steps)
    return dataclasses.asdict(trial)


@router.post("/menu-drafts/trial-calls", status_code=201)
async def trial_call(ctx: Context, _: Admin, body: TrialIn) -> dict[str, Any]:
    """A trial number: for 30 minutes a call to it walks the set with ``menus`` laid over
    the drafts, from ``menu``, through a worker and its engine (``callyard dev``: the
    softphone). Answered once every worker following trials has it (``workers``: how many).
    409 unless trial calls are on (``CALLYARD_MENU_TRIALS``); 422 while the set has an
    error; 503 when no worker follows trial calls."""
    if not ctx.settings.menu_trials:
        raise HTTPException(409, "trial calls are off: set CALLYARD_MENU_TRIALS=1 for the API "
                                 "and the workers (callyard dev turns it on)")
    trial = await store_trial(ctx.redis, await _candidate_source(ctx, body), body.menu)
    if trial.readers == 0:
        raise HTTPException(503, "no worker answers trial calls: set CALLYARD_MENU_TRIALS=1 "
                                 "for the workers too, and check they are running")
    return {"number": trial.number, "menu": trial.menu, "workers": trial.readers,
            "expires_at": datetime.fromtimestamp(trial.expires_at, UTC).isoformat()}


@router.put("/menu-drafts/{name}")
async def save_draft(ctx: Context, who: Admin, name: SlugPath, body: DraftIn) -> dict[str, Any]:
    """Save the draft of one menu (it may still make the set invalid: the answer lists the
    issues). 409 when someone else saved it since ``revision``, or when the live menu
    changed since ``base``."""
    menu = None if body.menu is None else body.menu.model_dump(mode="json")
    async with ctx.pool.acquire() as conn, conn.transaction():
        live = await menus_repo.get_menu(conn, name)
        live_digest = digest(menu_body(live)) if live else None
        if body.revision == 0 and live_digest != body.base:
            raise _conflict(f"menu {name!r} was changed live since you opened it; reload it",
                            live=menu_body(live) if live else None)
        if body.menu is None and live is None:
            raise HTTPException(404, f"menu {name!r} is not live: discard its draft instead")
        try:
            draft = await drafts_repo.save_draft(conn, name, menu, revision=body.revision,
                                                 base=live_digest if body.revision == 0 else None,
                                                 by=who.name)
        except DraftConflict as exc:
            raise _conflict(str(exc), draft=_draft_out(exc.current) if exc.current else None
                            ) from None
        state = await EditorState.read(conn)
    return {"draft": _draft_out(draft), "issues": _issues_out(state.issues())}


@router.delete("/menu-drafts/{name}", status_code=204)
async def discard_draft(
    ctx: Context, _: Admin, name: SlugPath, revision: Annotated[int, Query(ge=1)]
) -> Response:
    """Drop one menu's draft; the live menu stays. 409 when it changed since ``revision``."""
    if await drafts_repo.get_draft(ctx.pool, name) is None:
        raise HTTPException(404, f"menu {name!r} has no draft")
    try:
        await drafts_repo.discard_draft(ctx.pool, name, revision)
    except DraftConflict as exc:
        raise _conflict(str(exc)) from None
    return Response(status_code=204)


# ---------------------------------------------------------------- making a set live


def _rejected(issues: list[Issue], what: str = "not published") -> HTTPException:
    problems = errors(issues)
    listed = "; ".join(str(i) for i in problems[:5]) + (" ..." if len(problems) > 5 else "")
    return HTTPException(422, {
        "code": "menu_invalid",
        "message": f"{what}: {len(problems)} error(s): {listed}",
        "issues": _issues_out(problems),
    })


async def _make_live(
    conn: asyncpg.Connection, request: Request, ctx: Context, who: Principal,
    before: dict[str, MenuBody], after: dict[str, MenuBody],
) -> dict[str, MenuBody]:
    """Write the menus that differ into the menu tables, each recorded in the audit log;
    the live set as written (what its version records, and the reloader compares)."""
    audited = AUDITED["/api/menus/{name}"]
    client = client_address(request, ctx.settings.trusted_proxies)
    for name in sorted(before.keys() | after.keys()):
        if before.get(name) == after.get(name):
            continue
        params = {"name": name}
        snapshot = await audited.snapshot(conn, params)
        if name in after:
            await menus_repo.save_menu(conn, menu_from_body(name, s.MenuIn.model_validate(
                after[name])))
        else:
            await menus_repo.delete_menu(conn, name)
        await record_if_changed(conn, audited, params, snapshot,
                                actor=who.name, via=who.via, client=client)
    return await live_bodies(conn)


def _version_out(v: drafts_repo.MenuVersion) -> dict[str, Any]:
    out = dataclasses.asdict(v)
    if v.menus is None:
        out.pop("menus")
    return out


@router.post("/menu-drafts/publish")
async def publish(ctx: Context, who: Admin, request: Request, body: PublishIn) -> dict[str, Any]:
    """Make the drafts live and record the set as a new version."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await lock_menus(conn, who.name)
        state = await EditorState.read(conn)
        if not state.drafts:
            raise HTTPException(422, "there are no drafts to publish")
        seen = {name: d.revision for name, d in state.drafts.items()}
        if seen != body.revisions:
            changed = sorted(n for n in seen.keys() | body.revisions.keys()
                             if seen.get(n) != body.revisions.get(n))
            raise _conflict("the drafts changed since you reviewed them (" + ", ".join(changed)
                            + "); reload and check them again", menus=changed)
        before = state.live_bodies()
        stale = sorted(n for n, d in state.drafts.items() if digest(before.get(n)) != d.base)
        if stale:
            raise _conflict("changed live since their draft was started: " + ", ".join(stale)
                            + "; discard those drafts or redo them on the live menus",
                            menus=stale)
        issues = state.issues()
        if errors(issues):
            raise _rejected(issues)
        await record_edits(conn, before, baseline=False)  # REST or SQL edits not recorded yet
        after = await _make_live(conn, request, ctx, who, before, state.candidate())
        version = await drafts_repo.record_version(
            conn, by=who.name, action="publish", menus=after,
            changes=menu_changes(before, after), note=body.note)
        await drafts_repo.delete_drafts(conn, list(state.drafts))
    return {"version": _version_out(version),
            "warnings": _issues_out([i for i in issues if i.severity == "warning"])}


VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/menu-versions")
async def list_versions(
    ctx: Context, _: Supervisor,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[dict[str, Any]]:
    """Every menu set that went live, newest first, each with who made it (``action``:
    publish, rollback, edit (a REST or SQL edit; ``published_by`` names each person, SQL
    users as ``sql:<user> (<application>)``) or baseline) and what changed."""
    return [_version_out(v) for v in await drafts_repo.list_versions(ctx.pool, limit, before)]


@router.get("/menu-versions/{version_id}")
async def get_version(ctx: Context, _: Supervisor, version_id: VersionPath) -> dict[str, Any]:
    found = await drafts_repo.get_version(ctx.pool, version_id)
    if found is None:
        raise HTTPException(404, f"no menu version {version_id}")
    return _version_out(found)


@router.post("/menu-versions/{version_id}/rollback")
async def rollback(
    ctx: Context, who: Admin, request: Request, version_id: VersionPath, body: RollbackIn,
) -> dict[str, Any]:
    """Make version ``version_id``'s menus live again (checked like a publish: 422 if the
    set is invalid today, e.g. a queue it uses was deleted since). Drafts are kept."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await lock_menus(conn, who.name)
        target = await drafts_repo.get_version(conn, version_id)
        if target is None or target.menus is None:
            raise HTTPException(404, f"no menu version {version_id}")
        state = await EditorState.read(conn)
        before = state.live_bodies()
        issues = check_set(state.source, target.menus)
        if errors(issues):
            raise _rejected(issues)
        await record_edits(conn, before, baseline=False)
        after = await _make_live(conn, request, ctx, who, before, target.menus)
        version = await drafts_repo.record_version(
            conn, by=who.name, action="rollback", menus=after,
            changes=menu_changes(before, after), note=body.note, rollback_of=version_id)
    return {"version": _version_out(version)}
