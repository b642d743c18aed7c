"""The ``callyard`` command in a subprocess, with no CALLYARD_* environment at all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from appserver.devkit.embedded import EmbeddedPostgres, pid_alive
from appserver.store.migrations import discover


def _command() -> list[str]:
    script = Path(sys.executable).parent / "callyard"
    if script.exists():
        return [str(script)]
    found = shutil.which("callyard")
    return [found] if found else [sys.executable, "-m", "appserver.cli"]


def _run(
    args: list[str], cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **env}
    return subprocess.run(
        [*_command(), *args], cwd=cwd, env=clean, capture_output=True, text=True,
        timeout=timeout,
    )


def test_help_lists_migrate(scratch_dir: Path) -> None:
    result = _run(["--help"], scratch_dir)
    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout and "CALLYARD_" in result.stdout
    bare = _run([], scratch_dir)
    assert bare.returncode == 2 and "migrate" in bare.stdout


def test_migrate_twice_on_embedded_postgres(scratch_dir: Path) -> None:
    data = scratch_dir / "data"
    try:
        first = _run(["migrate"], scratch_dir, CALLYARD_DATA_DIR=str(data))
        assert first.returncode == 0, first.stderr
        expected = [m.version for m in discover()]
        assert first.stdout.splitlines() == [f"applied {v}" for v in expected]
        second = _run(["migrate"], scratch_dir, CALLYARD_DATA_DIR=str(data))
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines() == ["database is up to date"]
        listing = _run(["migrate", "--list"], scratch_dir, CALLYARD_DATA_DIR=str(data))
        assert listing.stdout.splitlines() == [f"{v}: applied" for v in expected]
    finally:
        EmbeddedPostgres(data / "postgres").stop()
    # The command stopped the server it started: nothing is left running.
    pidfile = data / "postgres" / "postmaster.pid"
    assert not pidfile.exists() or not pid_alive(int(pidfile.read_text().split()[0]))
    assert EmbeddedPostgres(data / "postgres").running_port() is None
    assert not (data / "redis").exists()  # migrate needs no Redis


def test_migrate_reuses_a_running_server_and_leaves_it(scratch_dir: Path) -> None:
    server = EmbeddedPostgres(scratch_dir / "postgres")
    server.start()
    try:
        result = _run(["migrate"], scratch_dir, CALLYARD_DATA_DIR=str(scratch_dir))
        assert result.returncode == 0, result.stderr
        assert server.running_port() is not None  # not stopped: this process started it
    finally:
        server.stop()


def test_migrate_with_database_url(scratch_dir: Path, pg_dsn: str) -> None:
    # pg_dsn is already migrated: nothing to do, and no embedded server is started.
    result = _run(["migrate"], scratch_dir, CALLYARD_DATABASE_URL=pg_dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database is up to date"
    assert not (scratch_dir / ".callyard").exists()


def test_unreachable_database_is_a_clear_error(scratch_dir: Path) -> None:
    result = _run(["migrate"], scratch_dir, CALLYARD_DATABASE_URL="postgresql://u@127.0.0.1:1/x")
    assert result.returncode == 1
    assert "callyard migrate:" in result.stderr and "Traceback" not in result.stderr


def test_missing_database_is_a_clear_error(scratch_dir: Path, database_url: str) -> None:
    url = database_url.rsplit("/", 1)[0] + "/no_such_database"
    result = _run(["migrate"], scratch_dir, CALLYARD_DATABASE_URL=url)
    assert result.returncode == 1
    assert 'database "no_such_database" does not exist' in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_exits_2_naming_the_variable(scratch_dir: Path) -> None:
    result = _run(["migrate"], scratch_dir, CALLYARD_LOG_FORMAT="xml")
    assert result.returncode == 2
    assert "CALLYARD_LOG_FORMAT" in result.stderr and "Traceback" not in result.stderr
    # --help needs no valid configuration.
    assert _run(["--help"], scratch_dir, CALLYARD_LOG_FORMAT="xml").returncode == 0


# ------------------------------------------------------------------ callyard psql


def test_psql_opens_the_embedded_database_in_one_step(scratch_dir: Path) -> None:
    """Editing menus by hand stays one step now that the embedded PostgreSQL needs a
    password: ``callyard psql`` connects with it (and starts the server if needed)."""
    data = scratch_dir / "data"
    try:
        result = _run(["psql", "-tA", "-c", "SELECT current_database(), current_user"],
                      scratch_dir, CALLYARD_DATA_DIR=str(data))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "callyard|postgres"
        # Without psql on PATH, the one bundled with embedded-postgres is used, and said so.
        bundled = _run(["psql", "-tA", "-c", "SELECT 7"], scratch_dir,
                       CALLYARD_DATA_DIR=str(data), PATH=str(scratch_dir))
        assert bundled.returncode == 0, bundled.stderr
        assert bundled.stdout.strip() == "7" and "bundled with embedded-postgres" in bundled.stderr
    finally:
        EmbeddedPostgres(data / "postgres").stop()
    assert EmbeddedPostgres(data / "postgres").running_port() is None  # stopped what it started


def test_psql_gets_the_password_in_its_environment_not_its_arguments(
    scratch_dir: Path, pg_dsn: str
) -> None:
    """Every local user can read a process's arguments (ps); only its owner its environment."""
    fake = scratch_dir / "bin" / "psql"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "args: $*"\necho "PGPASSWORD: $PGPASSWORD"\n')
    fake.chmod(0o755)
    password = unquote(urlsplit(pg_dsn).password or "")
    if not password:
        pytest.skip("the test database URL has no password")
    result = _run(["psql", "-c", "SELECT 1"], scratch_dir, CALLYARD_DATABASE_URL=pg_dsn,
                  PATH=f"{fake.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()[0]
    assert password not in args and args.endswith("-c SELECT 1")
    assert result.stdout.splitlines()[1] == f"PGPASSWORD: {password}"


@pytest.mark.parametrize(("dsn", "target", "password"), [
    ("postgresql://u:p%40ss@db:5432/x", "postgresql://u@db:5432/x", "p@ss"),
    ("postgresql://u:pw@[::1]:5432/x", "postgresql://u@[::1]:5432/x", "pw"),
    ("postgresql://u:pw@db1:5432,db2:5433/x?target_session_attrs=read-write",
     "postgresql://u@db1:5432,db2:5433/x?target_session_attrs=read-write", "pw"),
    ("postgresql://u@db1,db2/x", "postgresql://u@db1,db2/x", None),
])
def test_psql_target_keeps_every_host(dsn: str, target: str, password: str | None) -> None:
    """A failover URL lists several hosts: psql (libpq) gets them all, without the password."""
    from appserver.store.psql_command import split_password

    assert split_password(dsn) == (target, password)


def test_psql_missing_everywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from appserver.devkit import embedded
    from appserver.store import psql_command

    def no_bundle(name: str) -> Path:
        raise embedded.EmbeddedError("embedded PostgreSQL needs the 'embedded-postgres' package")

    monkeypatch.setattr(psql_command.shutil, "which", lambda name: None)
    monkeypatch.setattr(embedded, "pg_binary", no_bundle)
    assert psql_command.find_psql() is None
    assert "apt install postgresql-client" in psql_command.NO_PSQL


# ------------------------------------------------- callyard api on a public address


def test_api_refuses_a_public_address_with_development_secrets(scratch_dir: Path) -> None:
    """Finding 11: ``callyard api --host 0.0.0.0`` served with LiveKit's ``devkey`` /
    ``secret`` and no ``CALLYARD_API_SECRET``. It now refuses before starting anything,
    naming the variables, unless told otherwise explicitly."""
    data = scratch_dir / "data"
    result = _run(["api", "--host", "0.0.0.0"], scratch_dir, timeout=30,
                  CALLYARD_DATA_DIR=str(data))
    assert result.returncode == 2, result.stderr
    for name in ("CALLYARD_API_SECRET", "CALLYARD_LIVEKIT_API_KEY", "CALLYARD_API_ALLOW_INSECURE"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr and not data.exists()

    # The LiveKit pair fixed, the missing session secret alone still stops it.
    result = _run(["api"], scratch_dir, timeout=30, CALLYARD_DATA_DIR=str(data),
                  CALLYARD_API_HOST="10.1.2.3", CALLYARD_LIVEKIT_API_KEY="prod",
                  CALLYARD_LIVEKIT_API_SECRET="a-real-livekit-secret-of-32-chars-or-more")
    assert result.returncode == 2
    assert "CALLYARD_API_SECRET" in result.stderr and "LIVEKIT" not in result.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_api_on_loopback_may_use_development_secrets(host: str) -> None:
    from appserver.api.command import exposure_problems
    from appserver.settings import load_settings

    assert exposure_problems(load_settings(api_secret=None), host) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example.com"])
def test_api_on_other_addresses_needs_real_secrets(host: str) -> None:
    from appserver.api.command import exposure_problems
    from appserver.settings import load_settings

    dev = load_settings(api_secret=None, livekit_api_key="devkey", livekit_api_secret="secret")
    assert len(exposure_problems(dev, host)) == 2
    real = load_settings(api_secret="s" * 40, livekit_api_key="prod",
                         livekit_api_secret="a-real-livekit-secret-of-32-chars-or-more")
    assert exposure_problems(real, host) == []


def test_api_key_command_is_audited(scratch_dir: Path, pg_dsn: str) -> None:
    """Finding 12: creating or revoking a key from the shell left no trace either."""
    import asyncio
    import getpass

    import asyncpg

    for action in ("create", "revoke"):
        result = _run(["api-key", action, "ci"], scratch_dir, CALLYARD_DATABASE_URL=pg_dsn)
        assert result.returncode == 0, result.stderr

    async def entries() -> list[tuple[str, str, str, str]]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch("SELECT actor, via, action, name FROM audit_log ORDER BY id")
        finally:
            await conn.close()
        return [tuple(r) for r in rows]

    actor = f"cli:{getpass.getuser()}"
    assert asyncio.run(entries()) == [(actor, "cli", "create", "ci"),
                                      (actor, "cli", "update", "ci")]
