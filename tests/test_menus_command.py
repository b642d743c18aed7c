"""``callyard menus check|publish|status`` against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncpg
import pytest
import pytest_asyncio

from appserver.cli import main

SEED = """
INSERT INTO queues (name) VALUES ('support');
INSERT INTO ivr_menus (name, greeting) VALUES ('main', '{file:ivr/welcome}');
INSERT INTO ivr_menu_options (menu_id, digits, action, target)
     SELECT id, '1', 'enqueue', 'support' FROM ivr_menus WHERE name = 'main';
INSERT INTO extensions (number, kind, menu_id) SELECT '9999', 'menu', id FROM ivr_menus;
"""


@pytest_asyncio.fixture(loop_scope="session")
async def env(
    pg_pool: asyncpg.Pool, pg_dsn: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> asyncpg.Pool:
    await pg_pool.execute(SEED)
    monkeypatch.setenv("CALLYARD_DATABASE_URL", pg_dsn)
    monkeypatch.setenv("CALLYARD_REDIS_URL", redis_url)
    # main() would point the root logger at this test's captured stderr.
    monkeypatch.setattr("appserver.cli.setup_logging", lambda *args, **kwargs: None)
    return pg_pool


async def run_cli(*argv: str) -> int:
    import asyncio

    # The command runs its own event loop, so run it off this test's loop.
    return await asyncio.to_thread(main, ["menus", *argv])


async def test_check_publish_status(env: asyncpg.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("status") == 0
    assert "no menu set published yet" in capsys.readouterr().out
    assert await run_cli("check") == 0
    assert "1 menus, 1 extensions, 0 schedules: valid" in capsys.readouterr().out
    assert await run_cli("publish") == 0
    assert "live version: 1" in capsys.readouterr().out
    assert await run_cli("status") == 0
    assert "version 1 (digest " in capsys.readouterr().out

    await env.execute("UPDATE ivr_menu_options SET target = 'sales' WHERE digits = '1'")
    assert await run_cli("check") == 1
    out = capsys.readouterr().out
    assert (
        "error: menu 'main', option '1': action enqueue target queue 'sales' does not exist"
        " (known: support)" in out
    )
    assert await run_cli("publish") == 1
    assert "rejected, version 1 stays live" in capsys.readouterr().out
    assert await run_cli("status") == 1
    out = capsys.readouterr().out
    assert "version 1 " in out and "last error" in out and "'sales' does not exist" in out
