"""Where each command's PostgreSQL and Redis come from.

Production commands (``api``, ``freeswitch``, ``asterisk``, ``cdr-writer``) require their
storage URLs: without them they refuse at once, naming the variables and ``callyard dev``,
and start nothing (a server of their own would be one no other host reaches, and one left
running when they die). The operator tools fall back to the embedded servers, say so, and
stop what they started however they are stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import leftovers
import pytest

from appserver.devkit.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {  # command -> the variables it requires
    "api": ["CALLYARD_DATABASE_URL", "CALLYARD_REDIS_URL"],
    "freeswitch": ["CALLYARD_REDIS_URL"],
    "asterisk": ["CALLYARD_REDIS_URL"],
    "cdr-writer": ["CALLYARD_DATABASE_URL", "CALLYARD_REDIS_URL"],
}


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(CALLYARD_DATA_DIR=str(data_dir), CALLYARD_LOG_LEVEL="WARNING",
               CALLYARD_ASTERISK_ARI="http://user:secret@127.0.0.1:1", **extra)
    return env


def _run(args: list[str], data_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appserver.cli", *args], cwd=ROOT,
                          env=_env(data_dir, **extra), capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("command", sorted(NEEDS))
def test_production_command_refuses_without_its_storage_urls(
    command: str, scratch_dir: Path
) -> None:
    """Finding: with CALLYARD_REDIS_URL unset a worker started an embedded Redis that only
    its host could reach (and, killed, left it running); the API and the CDR writer did the
    same with PostgreSQL and Redis (the writer on purpose left them running)."""
    try:
        result = _run([command], scratch_dir)
    finally:
        leftovers.kill_all(scratch_dir)  # what a fallback to embedded servers would leave
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert err.startswith(f"callyard {command}: "), err
    for variable in NEEDS[command]:
        assert f"{variable}=" in err, err  # named, with an example value
    assert ("CALLYARD_DATABASE_URL" in err) == ("CALLYARD_DATABASE_URL" in NEEDS[command])
    assert "run `callyard dev`" in err and "never start servers of their own" in err
    assert not (scratch_dir / "postgres").exists() and not (scratch_dir / "redis").exists()


def test_only_the_missing_url_is_asked_for(scratch_dir: Path) -> None:
    result = _run(["api"], scratch_dir, CALLYARD_DATABASE_URL="postgresql://u:p@db:5432/x")
    assert result.returncode == 2
    assert "CALLYARD_REDIS_URL is not set" in result.stderr
    assert "CALLYARD_DATABASE_URL" not in result.stderr


def test_a_tool_says_which_embedded_server_it_uses(scratch_dir: Path) -> None:
    started = _run(["migrate"], scratch_dir)
    assert started.returncode == 0, started.stderr
    assert ("callyard migrate: CALLYARD_DATABASE_URL is not set, so this uses the embedded"
            f" PostgreSQL in {scratch_dir.resolve() / 'postgres'} (this host only; started for"
            " this command and stopped when it ends)") in started.stderr
    assert "database is up to date" not in started.stderr  # the output stays on stdout
    server = EmbeddedPostgres(scratch_dir / "postgres")
    server.start()  # as `callyard dev` leaves it while it runs
    try:
        reused = _run(["migrate"], scratch_dir)
        assert "already running, e.g. under `callyard dev`, and left running" in reused.stderr
        assert server.running_port() is not None
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_tool_stopped_by_a_signal_stops_the_embedded_servers_it_started(
    scratch_dir: Path, sig: int
) -> None:
    """Finding: SIGTERM killed a tool at once, leaving the embedded PostgreSQL and Redis it
    had started running (``callyard menus watch`` runs until stopped)."""
    proc = subprocess.Popen([sys.executable, "-m", "appserver.cli", "menus", "watch"], cwd=ROOT,
                            env=_env(scratch_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "live version N; following edits (Ctrl-C to stop)"
        assert "following edits" in line, proc.stderr.read() if proc.stderr else ""
        assert leftovers.in_directory(scratch_dir), "no embedded server was started"
        pgids = leftovers.groups(leftovers.family(proc.pid, scratch_dir))
        proc.send_signal(sig)
        proc.wait(30)
        assert proc.returncode == 130
        left = leftovers.wait_all_gone(pgids, scratch_dir)
        assert not left, f"left running after {signal.Signals(sig).name}: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers.kill_all(scratch_dir)
