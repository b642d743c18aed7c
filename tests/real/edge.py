"""The project's Kamailio edge (compose/kamailio: entrypoint.sh + kamailio.cfg, the path the
container takes) on loopback, in front of the real engines, for the real-engine tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sipp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "compose" / "kamailio" / "entrypoint.sh"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (Kamailio listens on both)."""
    while True:
        port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@dataclass(frozen=True)
class Edge:
    port: int  # where callers send their INVITEs
    log: Path

    def uri(self, number: str) -> str:
        return f"sip:{number}@127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_edge(directory: Path, freeswitch: str, asterisk: str) -> Iterator[Edge]:
    """Kamailio dispatching to ``freeswitch`` / ``asterisk`` (``host:port``); numbers 7xxx
    go to Asterisk, the rest to FreeSWITCH."""
    directory.mkdir(parents=True, exist_ok=True)
    port, internal = free_port(), free_port()
    env = {
        **os.environ,
        "KAMAILIO_BIN": KAMAILIO,
        "KAMAILIO_DISPATCHER_LIST": str(directory / "dispatcher.list"),
        "KAMAILIO_CTL": f"unix:{directory}/kamailio_ctl",
        "KAMAILIO_LISTEN_IP": "127.0.0.1", "KAMAILIO_SIP_PORT": str(port),
        "KAMAILIO_ADVERTISE": f"127.0.0.1:{port}",
        "KAMAILIO_INTERNAL_IP": "127.0.0.1", "KAMAILIO_INTERNAL_PORT": str(internal),
        "FREESWITCH_NODES": freeswitch, "ASTERISK_NODES": asterisk,
        "KAMAILIO_ASTERISK_NUMBERS": "^7[0-9]{3}$",
        "KAMAILIO_CHILDREN": "2", "KAMAILIO_PING_INTERVAL": "2",
    }  # fmt: skip
    log = directory / "kamailio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["sh", str(ENTRYPOINT), "-Y", str(directory), "-m", "32",
                                    "-M", "4"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        time.sleep(1.0)
        if process.poll() is not None:
            raise RuntimeError(f"kamailio exited: {log.read_text(errors='replace')[-3000:]}")
        yield Edge(port, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
