"""The demo data set: loads twice, compiles without errors, and its menus route as documented."""

from __future__ import annotations

from datetime import UTC, datetime

from appserver.devkit.demo import DEMO_AGENTS, DEMO_NUMBER, MENUS, seed_demo
from appserver.menus.loader import load_source
from appserver.sounds import DEMO_TEXT
from appserver.store.agents import get_agent
from ivr.calls import TERMINAL_COMMANDS, Dial, Enqueue, Transfer
from ivr.compile import compile_menuset
from ivr.testing import FlowHarness, default_call
from ivr.validate import errors, validate

# A Tuesday at 15:00 in New York (open) and a Sunday (closed).
OPEN = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
CLOSED = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)


async def test_seed_is_idempotent_and_valid(pg_pool) -> None:
    first = await seed_demo(pg_pool)
    second = await seed_demo(pg_pool)
    assert first == second
    source = await load_source(pg_pool)
    assert errors(validate(source)) == []
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ivr_menus") == 3
        assert await conn.fetchval("SELECT count(*) FROM queue_members") == len(DEMO_AGENTS)
    agent = await get_agent(pg_pool, "alice")
    assert agent is not None and agent.password_hash and "alice-demo" not in agent.password_hash
    admin = await get_agent(pg_pool, "admin")
    assert admin is not None and admin.role == "admin" and admin.password_hash


def test_every_demo_prompt_has_its_text() -> None:
    used = {p.removeprefix("file:") for m in MENUS for p in (
        *m.greeting, *(m.invalid_prompt or ()), *(m.timeout_prompt or ()),
        *(q for o in m.options for q in (o.prompt or ())))}
    assert used == set(DEMO_TEXT)


async def _walk(pg_pool, keys: list[str], now: datetime) -> FlowHarness:
    await seed_demo(pg_pool)
    menuset = compile_menuset(await load_source(pg_pool), 1)
    flow = menuset.flow_for(DEMO_NUMBER, clock=lambda: now)
    assert flow is not None
    h = FlowHarness(flow, call=default_call(DEMO_NUMBER))
    h.start()
    for key in keys:
        h.advance(0.5)  # into the menu's greeting: the key barges in
        h.press(key)
    h.advance(10)  # the option's own prompt plays, then the call is handed on
    return h


def first_terminal(h: FlowHarness) -> object:
    return next(c for c in h.commands if isinstance(c, TERMINAL_COMMANDS))


async def test_support_goes_to_the_queue(pg_pool) -> None:
    h = await _walk(pg_pool, ["2"], OPEN)
    assert first_terminal(h) == Enqueue("support", 0)


async def test_sales_open_reaches_a_person(pg_pool) -> None:
    h = await _walk(pg_pool, ["1", "1"], OPEN)
    t = first_terminal(h)
    assert isinstance(t, Dial) and (t.kind, t.target) == ("agent", "bob")  # extension 1002


async def test_sales_transfer(pg_pool) -> None:
    h = await _walk(pg_pool, ["1", "2"], OPEN)
    assert first_terminal(h) == Transfer("+15551230000")


async def test_sales_closed_offers_support(pg_pool) -> None:
    h = await _walk(pg_pool, ["1", "1"], CLOSED)
    assert "file:demo/sales-closed" in h.played
    assert first_terminal(h) == Enqueue("support", 0)
