"""A PostgreSQL primary and its streaming replica on loopback, for failover tests.

Both are :class:`~appserver.devkit.embedded.EmbeddedPostgres` servers (the bundled binaries).
The replica is a ``pg_basebackup -R`` copy of the primary; once it streams, the primary waits
for it at every commit (``synchronous_standby_names``), so a transaction the primary
confirmed is on the replica too: after a crash and a promotion nothing confirmed is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from appserver.devkit.embedded import (
    DEFAULT_DATABASE,
    PG_SUPERUSER,
    EmbeddedError,
    EmbeddedPostgres,
    pg_binary,
)
from appserver.private_files import private_dir, write_private

_REPLICATION_HBA = "host replication all 127.0.0.1/32 scram-sha-256\n"


@dataclass
class PgPair:
    primary: EmbeddedPostgres
    replica: EmbeddedPostgres
    primary_port: int
    replica_port: int

    def url(self, *ports: int, attrs: str = "read-write") -> str:
        """A URL listing the servers on ``ports`` (default: primary, then replica)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports or (self.primary_port,
                                                               self.replica_port))
        return (f"postgresql://{PG_SUPERUSER}:{self.primary.password()}@{hosts}/"
                f"{DEFAULT_DATABASE}?target_session_attrs={attrs}")

    def crash_primary(self) -> None:
        """The primary dies (immediate shutdown: no checkpoint, connections cut)."""
        _pg_ctl(self.primary, "-m", "immediate", "stop")

    def promote_replica(self) -> None:
        """The replica becomes the primary (returns once it accepts writes)."""
        _pg_ctl(self.replica, "-t", "30", "promote")


def _pg_ctl(server: EmbeddedPostgres, *args: str) -> None:
    result = server._run([str(pg_binary("pg_ctl")), "-D", str(server.directory), "-w", *args])
    if result.returncode != 0:
        raise EmbeddedError(f"pg_ctl {' '.join(args)}: {result.stderr.strip()}")


def _psql(server: EmbeddedPostgres, port: int, sql: str) -> str:
    result = server._run([str(pg_binary("psql")), "-X", "-tA", "-v", "ON_ERROR_STOP=1",
                          "-h", server.host, "-p", str(port), "-U", PG_SUPERUSER,
                          "-d", "postgres", "-c", sql])
    if result.returncode != 0:
        raise EmbeddedError(f"psql {sql!r}: {result.stderr.strip()}")
    return result.stdout.strip()


def start_pair(primary: EmbeddedPostgres, replica: EmbeddedPostgres) -> PgPair:
    """Start ``primary`` (not ``fast``: its commits must wait for the replica) and make
    ``replica``, an empty directory, its synchronous streaming replica."""
    assert not primary.fast
    primary_port = _start(primary)
    with (primary.directory / "pg_hba.conf").open("a") as hba:
        hba.write(_REPLICATION_HBA)
    _pg_ctl(primary, "reload")

    write_private(replica.password_file, primary.password())  # a copy has the same roles
    private_dir(replica.directory)
    if replica._run_as():
        replica._prepare_root()
    backup = replica._run([str(pg_binary("pg_basebackup")), "-D", str(replica.directory),
                           "-h", primary.host, "-p", str(primary_port), "-U", PG_SUPERUSER,
                           "-R", "-X", "stream", "-c", "fast", "--no-sync"])
    if backup.returncode != 0:
        raise EmbeddedError(f"pg_basebackup: {backup.stderr.strip()}")
    replica_port = _start(replica)

    # Only now (the replica copied postgresql.auto.conf without it): commits on the primary
    # wait for the replica, which must not wait for anyone once promoted.
    _psql(primary, primary_port, "ALTER SYSTEM SET synchronous_standby_names = '*'")
    _psql(primary, primary_port, "SELECT pg_reload_conf()")
    deadline = time.monotonic() + 15
    while _psql(primary, primary_port,
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1":
        if time.monotonic() > deadline:
            raise EmbeddedError("the replica never became a synchronous standby")
        time.sleep(0.1)
    return PgPair(primary, replica, primary_port, replica_port)


def _start(server: EmbeddedPostgres) -> int:
    """Start ``server``; its port."""
    server.start()
    port = server.running_port()
    assert port is not None
    return port
