"""The admin menu editor in real headless Chromium, against the real API, PostgreSQL and
Redis: a menu built from scratch, a validation error on its field, a simulated call into
the draft, publication through the live reloader and a call to the number through the
Asterisk worker; a conflicting edit; a rollback; read-only supervisors; accessibility
basics at two screen sizes. The README's screenshots (docs/admin-*.png) come from here
(CALLYARD_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from api_support import PASSWORDS, api_app, serving
from test_console_browser import ARGS, CHROMIUM

from appserver.api.auth import hash_password
from appserver.apps import MenuFlows
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SoundCatalog
from appserver.devkit.sim_routes import SimCalls, add_sim_routes
from appserver.menus.readers import MenuSetReader
from appserver.menus.reloader import MenuReloader
from appserver.settings import AriNode
from appserver.store.agents import Agent, save_agent
from appserver.store.extensions import Extension, save_extension
from appserver.store.menus import get_menu
from appserver.store.queues import Queue, save_queue

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed")

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHOTS = Path(tempfile.gettempdir()) / "callyard-admin-screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORDS = {**PASSWORDS, "admin2": "admin-pass-2"}


@asynccontextmanager
async def asterisk_on_simulator(redis_url: str
                                ) -> AsyncIterator[tuple[AriSimulator, MenuSetReader]]:
    """The ARI simulator and an Asterisk worker following the live menus in Redis and
    answering trial numbers (as in ``callyard dev``)."""
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1))
    await sim.start()
    reader = MenuSetReader(aioredis.Redis.from_url(redis_url), trials=True)
    await reader.start()
    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], MenuFlows(reader))
    await worker.start()
    try:
        await worker.wait_connected()
        yield sim, reader
    finally:
        await worker.stop()
        await reader.stop()
        await sim.stop()


@asynccontextmanager
async def admin_stack(pg_pool: Any, pg_dsn: str, redis_client: Any, redis_url: str | None = None
                      ) -> AsyncIterator[tuple[Any, str, Any]]:
    """The API served over HTTP with the live menu reloader, and Chromium: (api, base,
    browser). With ``redis_url``, as ``callyard dev`` serves it: the softphone's simulated
    calls (``/sim``, Asterisk simulator and worker) and trial calls on."""
    from playwright.async_api import async_playwright

    await save_queue(pg_pool, Queue(name="support"))
    await save_agent(pg_pool, Agent(username="admin2", display_name="Admin Two", role="admin",
                                    password_hash=await hash_password(PASSWORDS["admin2"])))
    reloader = MenuReloader(pg_dsn, redis_client, pool=pg_pool, debounce=0.05)
    async with contextlib.AsyncExitStack() as stack:
        api = await stack.enter_async_context(
            api_app(pg_pool, redis_client, menu_trials=redis_url is not None))
        if redis_url is not None:
            sim, _ = await stack.enter_async_context(asterisk_on_simulator(redis_url))
            add_sim_routes(api.app, SimCalls({"asterisk": sim}))
        base = await stack.enter_async_context(serving(api))
        await reloader.start()
        stack.push_async_callback(reloader.stop)
        pw = await stack.enter_async_context(async_playwright())
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        stack.push_async_callback(browser.close)
        yield api, base, browser


async def logged_in(browser: Any, base: str, user: str, viewport: dict[str, int] = DESKTOP
                    ) -> Any:
    from playwright.async_api import expect

    page = await browser.new_page(viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await page.goto(f"{base}/admin")
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(PASSWORDS[user])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#menus-view")).to_be_visible()
    return page


async def new_menu(page: Any, name: str) -> None:
    from playwright.async_api import expect

    await page.get_by_label("New menu").fill(name)
    await page.get_by_role("button", name="Create").click()
    await expect(page.locator("#editor-title")).to_contain_text(f"Menu {name}")


async def add_greeting(page: Any, text: str, kind: str = "tts") -> None:
    await page.get_by_role("button", name="Add greeting prompt").click()
    if kind != "tts":
        await page.get_by_label("Greeting: kind").last.select_option(kind)
    await page.get_by_label(f"Greeting: {kind} value").last.fill(text)


async def set_key(page: Any, key: str, action: str, target: str | None = None) -> Any:
    await page.locator("#keypad").get_by_role("button", name=f"Key {key}:").click()
    card = page.locator(f'#options .option[data-digits="{key}"]')
    await card.get_by_label("Action").select_option(action)
    if target is not None:
        await card.get_by_label("Target").fill(target)
    return card


async def save(page: Any) -> None:
    from playwright.async_api import expect

    await page.get_by_role("button", name="Save draft").click()
    await expect(page.locator("#save-state")).to_contain_text("Draft saved")


async def screenshot(page: Any, name: str) -> None:
    """Taken every run (and kept small); written over the README's copy in docs/ only with
    CALLYARD_UPDATE_SCREENSHOTS=1, so a test run leaves the checkout as it was."""
    folder = DOCS if os.environ.get("CALLYARD_UPDATE_SCREENSHOTS") == "1" else SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    await page.screenshot(path=str(path))
    assert path.stat().st_size < 150_000, f"{name} is {path.stat().st_size} bytes"


async def published_to_redis(redis_url: str, number: str, prompt: str) -> None:
    """A caller of ``number`` (ARI simulator -> Asterisk worker following the live menus in
    Redis) hears ``prompt``."""
    async with asterisk_on_simulator(redis_url) as (sim, reader):
        for _ in range(100):  # the reloader publishes within a fraction of a second
            if reader.current is not None and reader.current.flow_for(number) is not None:
                break
            await asyncio.sleep(0.05)
        call = await sim.place_call(number)
        await call.wait_for_prompt(prompt)
        await call.hangup()


async def test_build_a_two_level_menu_validate_try_publish_and_call(
        pg_pool, pg_dsn, redis_client, redis_url) -> None:
    from playwright.async_api import expect

    async with admin_stack(pg_pool, pg_dsn, redis_client, redis_url) as (_api, base, browser):
        page = await logged_in(browser, base, "admin1")
        await new_menu(page, "sales")
        await add_greeting(page, "acme/sales", "file")
        await set_key(page, "*", "back")
        await save(page)

        await new_menu(page, "main")
        await page.get_by_label("Description").fill("Front door")
        await add_greeting(page, "acme/welcome", "file")
        await add_greeting(page, "Sales 1, support 2.")
        card = await set_key(page, "1", "submenu", "sails")  # a typo: a dangling target
        target = card.get_by_label("Target")
        error = card.locator('[data-field="target"] .field-error')
        await expect(error).to_contain_text("submenu target 'sails' does not exist")
        await expect(target).to_have_attribute("aria-invalid", "true")
        await expect(page.locator("#issues")).to_contain_text("sails")
        await screenshot(page, "admin-menu-editor.png")
        await target.fill("sales")  # fixed: the error goes away as you type
        await expect(error).to_be_empty()
        await expect(target).not_to_have_attribute("aria-invalid", "true")
        await set_key(page, "2", "enqueue", "support")
        await expect(page.locator("#publish")).to_be_disabled()  # unsaved: save first
        await save(page)
        await expect(page.locator("#tree")).to_contain_text("2 · enqueue support")
        await expect(page.locator("#issue-count")).to_have_text("none")

        # Try it: the softphone calls the draft's trial number; the simulated Asterisk and
        # its worker walk the draft, the page captions what the caller hears.
        # (Asterisk plays files only: the tts line of the greeting is skipped, as on a real one.)
        await page.get_by_role("button", name="Try it").click()
        captions = page.locator("#captions")
        await expect(captions).to_contain_text("[recording acme/welcome]")
        await expect(page.locator("#try-number")).to_have_text(re.compile(r"^\*99[0-9]{8}$"))
        await page.locator("#try-keypad").get_by_role("button", name="Press 1").click()
        await expect(captions).to_contain_text("pressed 1")
        await expect(captions).to_contain_text("[recording acme/sales]")
        await page.locator("#try-keypad").get_by_role("button", name="Press *").click()
        await expect(captions.locator("li").last).to_contain_text("[recording acme/welcome]")
        await page.locator("#try-state").scroll_into_view_if_needed()
        await screenshot(page, "admin-try-it.png")
        assert await get_menu(pg_pool, "main") is None  # callers hear nothing of the draft
        await page.get_by_role("button", name="Hang up").click()

        await page.get_by_label("Note").fill("first menus")
        await page.get_by_role("button", name="Publish drafts").click()
        await expect(page.locator("#banner")).to_contain_text("Published as version #")
        await expect(page.locator("#live-status")).to_contain_text("Live version")
        await expect(page.locator("#history")).to_contain_text("admin1 · publish · first menus")
        main = await get_menu(pg_pool, "main")
        assert main is not None and [o.target for o in main.options] == ["sales", "support"]

        await save_extension(pg_pool, Extension("9999", "menu", "main"))
        # The simulated Asterisk plays files (it has no speech synthesis).
        await published_to_redis(redis_url, "9999", "file:acme/welcome")
        assert page.js_errors == []


async def test_a_conflicting_edit_is_refused_and_named(pg_pool, pg_dsn, redis_client) -> None:
    from playwright.async_api import expect

    async with admin_stack(pg_pool, pg_dsn, redis_client) as (api, base, browser):
        async with api.client(api.admin_key) as c:
            assert (await c.put("/api/menus/main", json={"greeting": ["tts:Hi"]})).status_code \
                == 200
        alice = await logged_in(browser, base, "admin1")
        bob = await logged_in(browser, base, "admin2")
        for page in (alice, bob):
            await page.locator("#tree").get_by_role("button", name="main").click()
        await alice.get_by_label("Greeting: tts value").fill("Alice's greeting")
        await save(alice)
        await bob.get_by_label("Greeting: tts value").fill("Bob's greeting")
        await bob.get_by_role("button", name="Save draft").click()
        banner = bob.locator("#banner")
        await expect(banner).to_contain_text("Conflict: menu 'main' was saved meanwhile by admin1")
        await bob.get_by_role("button", name="Reload").click()
        await expect(bob.get_by_label("Greeting: tts value")).to_have_value("Alice's greeting")
        await bob.get_by_label("Greeting: tts value").fill("Bob's greeting")
        await save(bob)
        drafts = (await api.ctx.pool.fetchrow("SELECT menu, updated_by FROM menu_drafts"))
        assert drafts["updated_by"] == "admin2"
        assert drafts["menu"]["greeting"] == ["tts:Bob's greeting"]
        assert bob.js_errors == [] and alice.js_errors == []


async def test_roll_back_to_an_earlier_version(pg_pool, pg_dsn, redis_client) -> None:
    from playwright.async_api import expect

    async with admin_stack(pg_pool, pg_dsn, redis_client) as (api, base, browser):
        async with api.client(api.admin_key) as c:
            for greeting in ("tts:First", "tts:Second"):
                state = (await c.get("/api/menu-drafts")).json()["menus"]
                base_at = state[0]["live_digest"] if state else None
                r = await c.put("/api/menu-drafts/main", json={
                    "revision": 0, "base": base_at, "menu": {"greeting": [greeting]}})
                r = await c.post("/api/menu-drafts/publish", json={
                    "revisions": {"main": r.json()["draft"]["revision"]}, "note": greeting})
                assert r.status_code == 200, r.text
        page = await logged_in(browser, base, "admin1")
        first = page.locator('#history > li[data-action="publish"]').last
        await first.locator("summary").click()
        await expect(first).to_contain_text("main added")
        second = page.locator("#history > li").first
        await second.locator("summary").click()
        await expect(second).to_contain_text('greeting: ["tts:First"] → ["tts:Second"]')
        await page.locator("#history-title").evaluate("h => h.scrollIntoView()")
        await screenshot(page, "admin-history.png")
        await first.get_by_role("button", name="Roll back to").click()
        await expect(page.locator("#banner")).to_contain_text("Rolled back")
        await expect(page.locator("#history > li").first).to_contain_text("rollback of #")
        assert (await get_menu(pg_pool, "main")).greeting == ("tts:First",)
        # Deleting a menu is a draft too; published, it is gone (and in the history).
        await page.locator("#tree").get_by_role("button", name="main").click()
        await page.get_by_role("button", name="Delete menu").click()
        await expect(page.locator("#save-state")).to_contain_text("Deleted when the drafts")
        await expect(page.get_by_role("button", name="Save draft")).to_be_hidden()
        await page.get_by_role("button", name="Publish drafts").click()
        await expect(page.locator("#history > li").first).to_contain_text("admin1 · publish")
        assert await get_menu(pg_pool, "main") is None


async def test_history_shows_rest_and_sql_edits_with_who_made_them(
        pg_pool, pg_dsn, redis_client) -> None:
    import asyncpg
    from playwright.async_api import expect

    async with admin_stack(pg_pool, pg_dsn, redis_client) as (api, base, browser):
        async with api.client(api.admin_key) as c:
            r = await c.put("/api/menus/main", json={"greeting": ["tts:Rest"]})
            assert r.status_code == 200, r.text

        async def versions(n: int) -> None:  # the reloader records an edit within a second
            for _ in range(50):
                if await pg_pool.fetchval("SELECT count(*) FROM menu_versions") == n:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"not {n} versions")

        await versions(2)  # the baseline (no menus), then the REST edit
        page = await logged_in(browser, base, "admin1")
        history = page.locator("#history > li")
        await expect(history.first).to_contain_text("REST edit by key:automation")
        conn = await asyncpg.connect(pg_dsn, server_settings={"application_name": "psql"})
        try:
            user = await conn.fetchval("SELECT session_user")
            await conn.execute("UPDATE ivr_menus SET greeting = '{tts:By hand}'")
        finally:
            await conn.close()
        await versions(3)
        await page.reload()
        sql_edit = page.locator("#history > li").first
        await expect(sql_edit).to_contain_text(f"SQL edit by sql:{user} (psql)")
        await sql_edit.locator("summary").click()
        await expect(sql_edit).to_contain_text('greeting: ["tts:Rest"] → ["tts:By hand"]')
        await expect(page.locator("#history > li").last).to_contain_text("baseline")
        rest_edit = page.locator("#history > li").nth(1)
        await rest_edit.locator("summary").click()
        await rest_edit.get_by_role("button", name="Roll back to").click()
        await expect(page.locator("#banner")).to_contain_text("Rolled back")
        assert (await get_menu(pg_pool, "main")).greeting == ("tts:Rest",)
        assert page.js_errors == []


async def test_supervisors_read_only_labels_keyboard_and_small_screens(
        pg_pool, pg_dsn, redis_client) -> None:
    from playwright.async_api import expect

    async with admin_stack(pg_pool, pg_dsn, redis_client) as (api, base, browser):
        async with api.client(api.admin_key) as c:
            await c.put("/api/menus/main", json={"greeting": ["tts:Hi"], "options": [
                {"digits": "1", "action": "enqueue", "target": "support"}]})
        for viewport in (DESKTOP, PHONE):
            page = await logged_in(browser, base, "admin1", viewport)
            await page.locator("#tree").get_by_role("button", name="main").click()
            await expect(page.locator("#menu-form")).to_be_visible()
            # Every control has an accessible name.
            unnamed = await page.evaluate("""() => [...document.querySelectorAll(
                  '#menus-view input, #menus-view select, #menus-view button')]
                .filter((x) => x.offsetParent !== null)
                .filter((x) => !(x.labels && x.labels.length) && !x.getAttribute('aria-label')
                               && !x.textContent.trim())
                .map((x) => x.outerHTML)""")
            assert unnamed == []
            # Nothing wider than the screen.
            assert await page.evaluate(
                "document.documentElement.scrollWidth <= document.documentElement.clientWidth")
            if viewport is DESKTOP:
                # Try it without callyard dev's simulator: the draft replayed in the page.
                await page.get_by_role("button", name="Try it").click()
                captions = page.locator("#captions")
                await expect(captions).to_contain_text("Hi")
                await expect(page.locator("#try-number")).to_have_count(0)  # trial calls off
                await page.locator("#try-keypad").get_by_role("button", name="Press 1").click()
                await expect(captions).to_contain_text("handed to queue support")
                await page.get_by_role("button", name="Hang up").click()
                await expect(page.locator("#try-panel")).to_be_hidden()
            # The keypad by keyboard: focus key 3, Enter adds its option.
            await page.locator("#keypad").get_by_role("button", name="Key 3:").focus()
            await page.keyboard.press("Enter")
            await expect(page.locator('#options .option[data-digits="3"]')).to_be_visible()
            await expect(page.locator('#options .option[data-digits="3"] select')).to_be_focused()
            if viewport is PHONE:
                await screenshot(page, "admin-phone.png")
            await page.close()

        page = await logged_in(browser, base, "super1")
        await expect(page.locator("#who")).to_contain_text("read-only")
        await page.locator("#tree").get_by_role("button", name="main").click()
        await expect(page.get_by_label("Description")).to_be_disabled()
        await expect(page.get_by_role("button", name="Save draft")).to_be_hidden()
        await expect(page.get_by_role("button", name="Publish drafts")).to_be_hidden()
        assert page.js_errors == []


async def test_queues_agents_schedules_numbers_and_keys_pages(pg_pool, pg_dsn, redis_client
                                                             ) -> None:
    from playwright.async_api import expect

    async with admin_stack(pg_pool, pg_dsn, redis_client) as (api, base, browser):
        async with api.client(api.admin_key) as c:
            await c.put("/api/menus/main", json={"greeting": ["tts:Hi"]})
        page = await logged_in(browser, base, "admin1")
        view = page.locator("#crud-view")

        await page.get_by_role("link", name="Schedules").click()
        await view.get_by_label("Name").fill("office")
        await view.get_by_label("Time zone").fill("Europe/Paris")
        await view.get_by_role("button", name="Add interval").click()
        await view.get_by_label("Weekday").select_option("Tuesday")
        await view.get_by_label("Opens").fill("09:00")
        await view.get_by_label("Closes").fill("17:30")
        await view.get_by_role("button", name="Add closure").click()
        await view.get_by_label("Name", exact=True).last.fill("New year")
        await view.get_by_label("Starts on").fill("2027-01-01")
        await view.get_by_label("Ends on").fill("2027-01-01")
        await view.get_by_role("button", name="Create").click()
        await expect(view.locator("table")).to_contain_text("Europe/Paris")
        async with api.client(api.admin_key) as c:
            sched = (await c.get("/api/schedules/office")).json()
        assert sched["hours"] == [{"weekday": 1, "opens": "09:00:00", "closes": "17:30:00"}]
        assert sched["closures"][0]["name"] == "New year"

        await page.get_by_role("link", name="Agents").click()
        await view.get_by_label("Username").fill("dora")
        await view.get_by_label("Display name").fill("Dora")
        await view.get_by_label("Skills").fill("french:7, billing:3")
        await view.get_by_label("New password").fill("dora-password-1")
        await view.get_by_role("button", name="Create").click()
        await expect(view.locator("table")).to_contain_text("Dora")

        await page.get_by_role("link", name="Queues").click()
        await view.get_by_role("button", name="Edit support").click()
        await view.get_by_label("Wrap-up (s)").fill("15")
        await view.get_by_role("button", name="Save").click()
        await expect(page.locator("#banner")).to_contain_text("Saved queue support.")
        await view.get_by_label("Agent", exact=True).select_option("dora")
        await view.get_by_label("Tier", exact=True).fill("2")
        await view.get_by_role("button", name="Add or update member").click()
        await expect(view.get_by_role("button", name="Remove dora")).to_be_visible()
        await screenshot(page, "admin-queue.png")

        await page.get_by_role("link", name="Numbers").click()
        await view.get_by_label("Number", exact=True).fill("9999")
        await view.get_by_label("Target").fill("main")
        await view.get_by_role("button", name="Create").click()
        await expect(view.locator("table")).to_contain_text("9999")
        await view.get_by_role("button", name="New number").click()
        await view.get_by_label("Number", exact=True).fill("8888")  # a menu that does not exist
        await view.get_by_label("Target").fill("nowhere")
        await view.get_by_role("button", name="Create").click()
        await expect(view.get_by_role("alert").first).to_contain_text("nowhere")

        await page.get_by_role("link", name="API keys").click()
        await view.get_by_label("Name").fill("reports")
        await view.get_by_label("Role").select_option("supervisor")
        await view.get_by_role("button", name="Create key").click()
        await expect(view.get_by_role("status")).to_contain_text("Key reports: cyk_")

        async with api.client(api.admin_key) as c:
            assert (await c.get("/api/queues/support")).json()["wrapup_seconds"] == 15
            member = (await c.get("/api/queues/support/members")).json()
            assert [(m["agent"], m["tier"]) for m in member] == [("dora", 2)]
            agent = (await c.get("/api/agents/dora")).json()
            assert agent["skills"] == {"french": 7, "billing": 3} and agent["has_password"]
            assert (await c.get("/api/extensions/9999")).json()["target"] == "main"
            assert (await c.get("/api/extensions/8888")).status_code == 404

        sup = await logged_in(browser, base, "super1")
        await sup.get_by_role("link", name="Queues").click()
        await sup.locator("#crud-view").get_by_role("button", name="View support").click()
        await expect(sup.locator("#crud-view").get_by_label("Wrap-up (s)")).to_be_disabled()
        await expect(sup.locator("#crud-view").get_by_role("button", name="Save")).to_be_hidden()
        await sup.get_by_role("link", name="API keys").click()
        await expect(sup.locator("#crud-view")).to_contain_text("managed by admins")
        assert page.js_errors == [] and sup.js_errors == []
