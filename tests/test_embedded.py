"""Embedded PostgreSQL and Redis: start, reuse, persist, stop without leftovers."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

from appserver.devkit.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    guard_directory,
    pid_alive,
    storage_urls,
)
from appserver.settings import load_settings

Server = TypeVar("Server", EmbeddedPostgres, EmbeddedRedis)


@pytest.fixture
def track() -> Iterator[Callable[[Server], Server]]:
    """Register servers a test starts; they are stopped even when the test fails."""
    servers: list[Server] = []

    def add(server: Server) -> Server:
        servers.append(server)
        return server

    yield add
    for server in servers:
        server.stop()


def _processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _pg_query(url: str, sql: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_postgres_starts_is_reused_persists_and_stops(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    data = scratch_dir / "pg"
    server = track(EmbeddedPostgres(data))
    url = server.start()
    assert server.started
    assert url.startswith(f"postgresql://postgres:{server.password()}@127.0.0.1:")
    assert url.endswith("/callyard")
    _pg_query(url, "CREATE TABLE kept AS SELECT 42 AS x")
    assert _processes_mentioning(str(data))

    again = EmbeddedPostgres(data)
    assert again.start() == url and not again.started  # reused, not started twice

    port = server.running_port()
    assert port is not None
    server.stop()
    assert server.running_port() is None and not _port_open(port)
    assert _processes_mentioning(str(data)) == []

    restarted = track(EmbeddedPostgres(data))
    url2 = restarted.start()
    try:
        assert restarted.started
        assert _pg_query(url2, "SELECT x FROM kept") == 42
    finally:
        restarted.stop()
    assert _processes_mentioning(str(data)) == []
    restarted.stop()  # stopping a stopped server is a no-op


def test_parallel_starts_share_one_postgres(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    data = scratch_dir / "pg"
    servers = [track(EmbeddedPostgres(data)) for _ in range(3)]
    urls: list[str] = []
    threads = [threading.Thread(target=lambda s=s: urls.append(s.start())) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(set(urls)) == 1 and sum(s.started for s in servers) == 1
    finally:
        servers[0].stop()
    assert _processes_mentioning(str(data)) == []


def test_redis_starts_is_reused_persists_and_stops(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    data = scratch_dir / "redis"
    server = track(EmbeddedRedis(data))
    url = server.start()
    assert server.started and url.startswith(f"redis://:{server.password()}@127.0.0.1:")
    client = redis.Redis.from_url(url)
    client.set("kept", "yes")
    client.close()
    assert "appendonly yes" in (data / "redis.conf").read_text()
    pid = int((data / "redis.pid").read_text())

    again = EmbeddedRedis(data)
    assert again.start() == url and not again.started

    port = server.running_port()
    assert port is not None
    server.stop()
    assert not pid_alive(pid) and not _port_open(port)

    restarted = track(EmbeddedRedis(data))
    url2 = restarted.start()
    try:
        client = redis.Redis.from_url(url2)
        assert client.get("kept") == b"yes"  # survived the restart (append-only file)
        client.close()
    finally:
        restarted.stop()


def test_redis_restarts_over_a_stale_pid_file(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    data = scratch_dir / "redis"
    data.mkdir()
    (data / "redis.pid").write_text("999999\n")
    (data / "redis.port").write_text("1\n")
    server = track(EmbeddedRedis(data))
    url = server.start()
    try:
        assert server.started and redis.Redis.from_url(url).ping()
    finally:
        server.stop()


def test_storage_urls_stops_only_what_it_started(
    scratch_dir: Path, track: Callable[[Server], Server], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(data_dir=scratch_dir)
    track(EmbeddedPostgres(scratch_dir / "postgres"))
    track(EmbeddedRedis(scratch_dir / "redis"))
    with storage_urls(settings, "callyard tool") as (db_url, redis_url):
        assert _pg_query(db_url, "SELECT 1") == 1
        assert redis.Redis.from_url(redis_url).ping()
        pg_port = EmbeddedPostgres(scratch_dir / "postgres").running_port()
        redis_port = EmbeddedRedis(scratch_dir / "redis").running_port()
    assert pg_port and redis_port
    assert not _port_open(pg_port) and not _port_open(redis_port)
    assert _processes_mentioning(str(scratch_dir)) == []
    said = capsys.readouterr().err  # the tool says which servers it uses
    assert "callyard tool: CALLYARD_DATABASE_URL is not set, so this uses the embedded " \
        f"PostgreSQL in {scratch_dir.resolve() / 'postgres'}" in said
    assert "callyard tool: CALLYARD_REDIS_URL is not set" in said
    assert said.count("started for this command and stopped when it ends") == 2

    # Servers already running (e.g. under callyard dev) are reused and left running.
    db_url = EmbeddedPostgres(scratch_dir / "postgres").start()
    EmbeddedRedis(scratch_dir / "redis").start()
    with storage_urls(settings, "callyard tool") as (db_url2, _):
        assert db_url2 == db_url
    assert _pg_query(db_url, "SELECT 1") == 1
    assert capsys.readouterr().err.count("already running, e.g. under `callyard dev`") == 2
    EmbeddedPostgres(scratch_dir / "postgres").stop()
    EmbeddedRedis(scratch_dir / "redis").stop()
    assert _processes_mentioning(str(scratch_dir)) == []


def test_storage_urls_uses_configured_urls(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    settings = load_settings(
        data_dir=scratch_dir,
        database_url="postgresql://u@db.example:5432/x",
        redis_url="redis://cache.example:6379/3",
    )
    with storage_urls(settings, "callyard tool") as urls:
        assert urls == ("postgresql://u@db.example:5432/x", "redis://cache.example:6379/3")
    assert not (scratch_dir / "postgres").exists() and not (scratch_dir / "redis").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs the unprivileged system user")
def test_postgres_under_root_runs_unprivileged(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    server = track(EmbeddedPostgres(scratch_dir / "pg"))
    server.start()
    try:
        pid = int((scratch_dir / "pg" / "postmaster.pid").read_text().split()[0])
        assert os.stat(f"/proc/{pid}").st_uid != 0
    finally:
        server.stop()


def test_guard_stops_servers_when_the_owner_dies(scratch_dir: Path) -> None:
    data = scratch_dir / "session"
    owner = subprocess.Popen(["sleep", "60"])
    pg, rd = EmbeddedPostgres(data / "postgres"), EmbeddedRedis(data / "redis")
    try:
        pg.start()
        rd.start()
        guard = guard_directory(data, owner.pid)
        time.sleep(0.3)
        assert pg.running_port() and rd.running_port()  # owner alive: guard waits
        owner.kill()
        owner.wait()
        guard.wait(30)
        assert not data.exists()
        assert _processes_mentioning(str(data)) == []
        assert pg.running_port() is None and rd.running_port() is None
    finally:
        owner.kill()
        if data.exists():
            pg.stop()
            rd.stop()


# ------------------------------------------------- other local users (hardening, finding 2)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{parts.hostname}:{parts.port}"))


def _exposed(directory: Path) -> list[str]:
    """Entries under ``directory`` (itself included) that group or others may read or write."""
    found = []
    for path in [directory, *directory.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o066:
            found.append(f"{path} {stat.S_IMODE(mode):o}")
    return found


def test_postgres_refuses_a_login_without_its_password(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    """Finding: the embedded PostgreSQL trusted ``postgres`` without a password, so any local
    user could connect to 127.0.0.1:PORT and edit agents, roles and API keys."""
    data = scratch_dir / "pg"
    server = track(EmbeddedPostgres(data))
    url = server.start()
    assert _pg_query(url, "SELECT 1") == 1
    with pytest.raises(asyncpg.InvalidPasswordError):
        _pg_query(_without_password(url), "SELECT 1")
    with pytest.raises(asyncpg.InvalidPasswordError):
        _pg_query(url.replace(server.password(), "guessed"), "SELECT 1")
    assert oct(server.password_file.stat().st_mode & 0o777) == "0o600"

    # A cluster an older version left with `trust` (and no password file) gets a password.
    server.stop()
    (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    server.password_file.unlink()
    url = server.start()
    assert _pg_query(url, "SELECT 1") == 1
    with pytest.raises(asyncpg.InvalidPasswordError):
        _pg_query(_without_password(url), "SELECT 1")


def test_redis_refuses_commands_without_its_password(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    """Finding: the embedded Redis had no password; any local user could read the session
    secret kept there (and every queue's state) over 127.0.0.1."""
    server = track(EmbeddedRedis(scratch_dir / "redis"))
    url = server.start()
    assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(_without_password(url)).get("anything")

    # One an older version started without a password is restarted with it.
    redis.Redis.from_url(url).config_set("requirepass", "")
    again = track(EmbeddedRedis(scratch_dir / "redis"))
    url = again.start()
    assert again.started and redis.Redis.from_url(url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(_without_password(url)).get("anything")


def test_data_dir_is_private_to_its_owner(
    scratch_dir: Path, track: Callable[[Server], Server]
) -> None:
    """Finding: the embedded Redis's append-only file was world-readable (0644), and the
    session-signing secret was in it: another local user could forge an admin session.
    Data written by an older version with the default umask is locked down too."""
    data = scratch_dir / "data"
    (data / "redis").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    (data / "redis").chmod(0o755)
    old = data / "redis" / "appendonly.aof"
    old.write_text("")
    old.chmod(0o644)
    settings = load_settings(data_dir=data)
    track(EmbeddedPostgres(data / "postgres"))
    track(EmbeddedRedis(data / "redis"))
    with storage_urls(settings, "callyard tool") as (db_url, redis_url):
        _pg_query(db_url, "CREATE TABLE t AS SELECT 1")
        client = redis.Redis.from_url(redis_url)
        client.set("callyard:test", "data")
        client.bgrewriteaof()
        time.sleep(0.5)
        client.close()
        assert _exposed(data) == []
        if os.geteuid() == 0:  # as another local user: nothing to read
            for path in (old, data / "redis" / "password", data / "postgres.password"):
                peek = subprocess.run(["cat", str(path)], user="nobody", capture_output=True)
                assert peek.returncode != 0, path
    assert _exposed(data) == []
