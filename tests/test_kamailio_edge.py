"""The shipped Kamailio edge (compose/kamailio) run for real against stand-in engine nodes.

One ``kamailio`` process is started through ``compose/kamailio/entrypoint.sh`` (the same
path the container takes) on loopback, with short timers. Engine nodes are small asyncio
UDP SIP servers on their own loopback addresses (FreeSWITCH set: fs1, fs2; Asterisk set:
ast1) whose behaviour each test scripts; callers, agent phones and a flooder are UDP
sockets sending raw SIP. Node health is read with ``kamcmd dispatcher.list``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sip_ua import (
    SipCaller,
    SipEndpoint,
    SipMessage,
    build,
    digest_authorization,
    parse_sip,
    response_to,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "compose" / "kamailio" / "entrypoint.sh"
KAMAILIO = shutil.which("kamailio") or next(
    (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.path.exists(p)), None
)
KAMCMD = shutil.which("kamcmd") or (str(Path(KAMAILIO).with_name("kamcmd")) if KAMAILIO else None)

pytestmark = pytest.mark.skipif(
    KAMAILIO is None or KAMCMD is None or not os.path.exists(KAMCMD),
    reason="kamailio/kamcmd not installed (Debian package `kamailio`; .ci/run installs it)",
)

EDGE_IP = "127.0.0.1"
CALLER_IP = "127.0.0.1"
FLOODER_IP = "127.0.0.9"
NODE_IPS = {"fs1": "127.0.0.2", "fs2": "127.0.0.3", "ast1": "127.0.0.4"}
INVITE_TIMEOUT_MS = 1000
AGENT_PASSWORD = "agent-secret"


# ----------------------------------------------------------------------------- endpoints


class UdpEndpoint(asyncio.DatagramProtocol):
    """A UDP socket on a loopback address; ``on_message`` handles what arrives."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.ip, 0))
        self.transport = transport
        self.port = self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_sip(data)
        if msg is not None:
            self.on_message(msg, addr)

    def on_message(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SipClient(UdpEndpoint):
    """A caller, phone or engine-side UAC: sends requests, collects responses per Call-ID.

    Requests it receives (e.g. an INVITE to a registered phone) are recorded and answered
    200 when ``answer_requests`` is set.
    """

    def __init__(self, ip: str, edge: tuple[str, int]) -> None:
        super().__init__(ip)
        self.edge = edge
        self.responses: dict[str, asyncio.Queue[SipMessage]] = {}
        self.requests: list[SipMessage] = []
        self.answer_requests = True

    def on_message(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        if msg.is_response:
            self.responses.setdefault(msg.call_id, asyncio.Queue()).put_nowait(msg)
            return
        self.requests.append(msg)
        if self.answer_requests and msg.method != "ACK":
            contact = ("Contact", f"<sip:phone@{self.ip}:{self.port}>")
            self.send(response_to(msg, 200, "OK", contact), addr)

    def request(
        self,
        method: str,
        user: str | None,
        *,
        call_id: str | None = None,
        cseq: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        omit: tuple[str, ...] = (),
    ) -> str:
        call_id = call_id or uuid.uuid4().hex
        host = f"{self.edge[0]}:{self.edge[1]}"
        ruri = f"sip:{user}@{host}" if user else f"sip:{host}"
        to_user = user or "edge"
        headers = [
            ("Via", f"SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:caller@{self.ip}>;tag={uuid.uuid4().hex[:8]}"),
            ("To", f"<sip:{to_user}@{self.edge[0]}>"),
            ("Call-ID", call_id),
            ("CSeq", cseq or f"1 {method}"),
            ("Contact", f"<sip:caller@{self.ip}:{self.port}>"),
        ]
        headers = [(k, v) for k, v in headers if k not in omit] + (extra or [])
        self.responses.setdefault(call_id, asyncio.Queue())
        self.send(build(f"{method} {ruri} SIP/2.0", headers), self.edge)
        return call_id

    async def final(self, call_id: str, timeout: float = 5.0) -> SipMessage:
        queue = self.responses.setdefault(call_id, asyncio.Queue())
        async with asyncio.timeout(timeout):
            while True:
                msg = await queue.get()
                if msg.status >= 200:
                    return msg

    async def call(self, user: str, timeout: float = 5.0) -> SipMessage:
        return await self.final(self.request("INVITE", user), timeout)

    def in_dialog(self, ok: SipMessage, method: str, cseq: int) -> None:
        """Send ACK/BYE/... in the dialog a 200 OK established, along its Record-Route."""
        route_set = list(reversed(ok.get_all("Record-Route")))
        first_hop = re.search(r"sip:([\d.]+):(\d+)", route_set[0]) if route_set else None
        assert first_hop, f"no Record-Route in {ok.first_line}"
        headers = [
            ("Via", f"SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}"),
            *(("Route", r) for r in route_set),
            ("Max-Forwards", "70"),
            ("From", ok.get("From") or ""),
            ("To", ok.get("To") or ""),
            ("Call-ID", ok.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        contact = (ok.get("Contact") or "").strip("<>")
        self.send(
            build(f"{method} {contact} SIP/2.0", headers),
            (first_hop.group(1), int(first_hop.group(2))),
        )


class EngineNode(SipClient):
    """Stands in for a FreeSWITCH/Asterisk node: answers OPTIONS and INVITE as scripted.

    ``alive`` False: answers nothing. ``invite`` is "ok" (100 + 200), "503", or "silent".
    It also sends requests from its own socket, as an engine does (``edge``: the edge's
    internal socket, set once the edge runs).
    """

    def __init__(self, name: str, ip: str) -> None:
        super().__init__(ip, ("", 0))
        self.name = name
        self.alive = True
        self.invite = "ok"
        self.options = 200  # status answered to OPTIONS
        self.received: list[SipMessage] = []

    def on_message(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        self.received.append(msg)
        if msg.is_response:
            super().on_message(msg, addr)
            return
        if not self.alive:
            return
        tag = ("X-Node", self.name)
        if msg.method == "OPTIONS":
            self.send(response_to(msg, self.options, "Probe Reply", tag), addr)
        elif msg.method == "INVITE":
            if self.invite == "ok":
                self.send(response_to(msg, 100, "Trying", tag), addr)
                contact = ("Contact", f"<sip:{self.name}@{self.ip}:{self.port}>")
                self.send(response_to(msg, 200, "OK", tag, contact), addr)
            elif self.invite == "503":
                self.send(response_to(msg, 503, "Service Unavailable", tag), addr)
        elif msg.method in ("BYE", "CANCEL"):
            self.send(response_to(msg, 200, "OK", tag), addr)

    def invites(self) -> list[SipMessage]:
        """Distinct INVITE transactions received (retransmissions folded)."""
        seen: dict[str, SipMessage] = {}
        for m in self.received:
            if not m.is_response and m.method == "INVITE":
                seen.setdefault(m.call_id, m)
        return list(seen.values())

    def options_count(self) -> int:
        return sum(1 for m in self.received if not m.is_response and m.method == "OPTIONS")

    def reset(self) -> None:
        self.alive = True
        self.invite = "ok"
        self.options = 200
        self.received.clear()


# ----------------------------------------------------------------------------- the edge


@dataclass
class Edge:
    port: int  # public socket (callers, phones), advertised as itself
    internal_port: int  # socket towards the engine nodes
    ctl: str
    nodes: dict[str, EngineNode]
    log: Path
    process: subprocess.Popen[bytes]
    clients: list[SipClient] = field(default_factory=list)

    @property
    def addr(self) -> tuple[str, int]:
        return (EDGE_IP, self.port)

    @property
    def internal_addr(self) -> tuple[str, int]:
        return (EDGE_IP, self.internal_port)

    def node_flags(self) -> dict[str, str]:
        """node name -> dispatcher FLAGS (e.g. "AP" active, "IP" inactive, "TP" trying)."""
        out = subprocess.run(
            [str(KAMCMD), "-s", self.ctl, "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        by_uri = dict(re.findall(r"URI:\s*sip:(\S+)\s+FLAGS:\s*(\S+)", out))
        return {
            name: by_uri.get(f"{node.ip}:{node.port}", "?") for name, node in self.nodes.items()
        }

    async def wait_flags(self, name: str, predicate: Callable[[str], bool], within: float) -> str:
        deadline = time.monotonic() + within
        while True:
            flags = self.node_flags()[name]
            if predicate(flags):
                return flags
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} flags stayed {flags!r} for {within}s")
            await asyncio.sleep(0.2)

    async def all_healthy(self) -> None:
        for node in self.nodes.values():
            node.reset()
        for name, flags in self.node_flags().items():
            if flags != "?":  # "?": not in the dispatcher list
                await self.wait_flags(name, lambda f: f.startswith("A"), within=8)
        for node in self.nodes.values():
            node.received.clear()

    async def client(self, ip: str = CALLER_IP) -> SipClient:
        c = SipClient(ip, self.addr)
        await c.open()
        self.clients.append(c)
        return c

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    """A port free for both UDP and TCP on the edge address."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((EDGE_IP, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((EDGE_IP, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@contextlib.asynccontextmanager
async def running_edge(
    run_dir: Path, freeswitch: tuple[str, ...] = ("fs1", "fs2"), **overrides: str
) -> AsyncIterator[Edge]:
    """Start kamailio through entrypoint.sh with fresh stand-in nodes (``freeswitch``: those
    in the FreeSWITCH set); stop it on exit."""
    nodes = {name: EngineNode(name, ip) for name, ip in NODE_IPS.items()}
    for node in nodes.values():
        await node.open()
    port = _free_port()
    internal_port = _free_port()
    ctl = f"unix:{run_dir}/kamailio_ctl"
    env = {
        **os.environ,
        "KAMAILIO_BIN": str(KAMAILIO),
        "KAMAILIO_DISPATCHER_LIST": str(run_dir / "dispatcher.list"),
        "KAMAILIO_CTL": ctl,
        "KAMAILIO_LISTEN_IP": EDGE_IP,
        "KAMAILIO_SIP_PORT": str(port),
        "KAMAILIO_ADVERTISE": f"{EDGE_IP}:{port}",
        "KAMAILIO_INTERNAL_IP": EDGE_IP,
        "KAMAILIO_INTERNAL_PORT": str(internal_port),
        "FREESWITCH_NODES": ",".join(f"{nodes[n].ip}:{nodes[n].port}" for n in freeswitch),
        "ASTERISK_NODES": f"{nodes['ast1'].ip}:{nodes['ast1'].port}",
        "KAMAILIO_ASTERISK_NUMBERS": "^7[0-9]{3}$",
        "KAMAILIO_CHILDREN": "2",
        "KAMAILIO_PING_INTERVAL": "1",
        "KAMAILIO_PROBING_THRESHOLD": "1",
        "KAMAILIO_INACTIVE_THRESHOLD": "1",
        "KAMAILIO_INVITE_TIMEOUT_MS": str(INVITE_TIMEOUT_MS),
        "KAMAILIO_PIKE_UNIT": "2",
        "KAMAILIO_PIKE_DENSITY": "60",
        "KAMAILIO_BAN_SECONDS": "60",
        "KAMAILIO_AGENT_PASSWORD": AGENT_PASSWORD,
        "KAMAILIO_NATPING_INTERVAL": "1",
        "KAMAILIO_LOG_LEVEL": "2",
        **overrides,
    }
    log = run_dir / "kamailio.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "-Y", str(run_dir), "-m", "32", "-M", "4"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    e = Edge(port=port, internal_port=internal_port, ctl=ctl, nodes=nodes, log=log, process=process)
    for node in nodes.values():
        node.edge = e.internal_addr
    try:
        probe = await e.client()
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"kamailio exited with {process.returncode}:\n{e.log_tail()}")
            with contextlib.suppress(TimeoutError):
                reply = await probe.final(probe.request("OPTIONS", None), timeout=0.5)
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"kamailio did not answer OPTIONS:\n{e.log_tail()}")
        await e.all_healthy()
        yield e
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for c in e.clients:
            c.close()
        for node in nodes.values():
            node.close()


@pytest.fixture(scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    async with running_edge(tmp_path_factory.mktemp("kamailio")) as e:
        yield e


@pytest.fixture
async def healthy(edge: Edge) -> Edge:
    """The edge with every node answering and active, and empty node records."""
    await edge.all_healthy()
    return edge


# ----------------------------------------------------------------------------- tests


async def test_invites_spread_round_robin_over_the_freeswitch_set(healthy: Edge) -> None:
    caller = await healthy.client()
    replies = [await caller.call("9999") for _ in range(6)]

    assert [r.status for r in replies] == [200] * 6
    served = [r.get("X-Node") for r in replies]
    assert served.count("fs1") == 3 and served.count("fs2") == 3, served
    assert len(healthy.nodes["fs1"].invites()) == 3
    assert len(healthy.nodes["fs2"].invites()) == 3
    assert healthy.nodes["ast1"].invites() == []
    # number untouched, one hop added, sent from the internal socket
    invite = healthy.nodes["fs1"].invites()[0]
    assert invite.ruri.startswith("sip:9999@")
    assert invite.get("Max-Forwards") == "69"
    assert f"{EDGE_IP}:{healthy.internal_port}" in (invite.get("Via") or "")
    # double Record-Route: the engine side and the caller side each see their socket
    routes = invite.get_all("Record-Route")
    assert len(routes) == 2
    assert f"{EDGE_IP}:{healthy.internal_port}" in routes[0]
    assert f"{EDGE_IP}:{healthy.port}" in routes[1]


async def test_in_dialog_requests_follow_the_record_route(healthy: Edge) -> None:
    caller = await healthy.client()
    ok = await caller.call("9999")
    assert ok.status == 200
    node = healthy.nodes[ok.get("X-Node") or ""]
    # the caller's first hop is the edge's advertised public socket
    assert f"{EDGE_IP}:{healthy.port}" in ok.get_all("Record-Route")[-1]

    def methods() -> list[str]:
        return [m.method for m in node.received if not m.is_response and m.call_id == ok.call_id]

    caller.in_dialog(ok, "ACK", 1)
    # Kamailio's UDP children may relay two back-to-back datagrams in either order: the BYE
    # goes once the ACK is through, as it would from a phone a moment later.
    deadline = asyncio.get_running_loop().time() + 5
    while "ACK" not in methods():
        assert asyncio.get_running_loop().time() < deadline, methods()
        await asyncio.sleep(0.02)
    caller.in_dialog(ok, "BYE", 2)
    bye_ok = await caller.final(ok.call_id)
    assert bye_ok.status == 200 and (bye_ok.get("CSeq") or "").endswith("BYE")
    assert methods() == ["INVITE", "ACK", "BYE"]


async def test_sip_over_tcp_reaches_the_udp_nodes(healthy: Edge) -> None:
    reader, writer = await asyncio.open_connection(*healthy.addr)
    try:
        local_ip, local_port = writer.get_extra_info("sockname")[:2]
        call_id = uuid.uuid4().hex
        writer.write(
            build(
                f"INVITE sip:9999@{EDGE_IP}:{healthy.port};transport=tcp SIP/2.0",
                [
                    ("Via", f"SIP/2.0/TCP {local_ip}:{local_port};branch=z9hG4bK{call_id}"),
                    ("Max-Forwards", "70"),
                    ("From", f"<sip:caller@{local_ip}>;tag=tcp1"),
                    ("To", f"<sip:9999@{EDGE_IP}>"),
                    ("Call-ID", call_id),
                    ("CSeq", "1 INVITE"),
                    ("Contact", f"<sip:caller@{local_ip}:{local_port};transport=tcp>"),
                ],
            )
        )
        await writer.drain()
        statuses: list[int] = []
        async with asyncio.timeout(5):
            while not statuses or statuses[-1] < 200:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"Content-Length:\s*(\d+)", head, re.I)
                assert length is not None, head
                await reader.readexactly(int(length.group(1)))
                msg = parse_sip(head)
                assert msg is not None and msg.call_id == call_id
                statuses.append(msg.status)
        assert statuses[-1] == 200
        served = [
            n for n in healthy.nodes.values() if any(i.call_id == call_id for i in n.invites())
        ]
        assert len(served) == 1 and served[0].name.startswith("fs")
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("dialled", "engine", "ruri_user"),
    [
        ("9999", "fs", "9999"),  # default engine
        ("*19999", "fs", "9999"),  # FreeSWITCH prefix, stripped
        ("*29999", "ast", "9999"),  # Asterisk prefix, stripped
        ("8123", "fs", "8123"),  # digits that merely look like a prefix stay whole
        ("7001", "ast", "7001"),  # KAMAILIO_ASTERISK_NUMBERS range
        ("70012", "fs", "70012"),  # outside the range: default
    ],
)
async def test_engine_is_chosen_by_called_number(
    healthy: Edge, dialled: str, engine: str, ruri_user: str
) -> None:
    caller = await healthy.client()
    reply = await caller.call(dialled)
    assert reply.status == 200
    assert (reply.get("X-Node") or "").startswith(engine)
    node = healthy.nodes[reply.get("X-Node") or ""]
    assert node.invites()[0].ruri.startswith(f"sip:{ruri_user}@")


async def test_a_caller_on_an_engine_host_is_not_taken_for_the_engine(healthy: Edge) -> None:
    # single-host and host-network deployments: a phone shares the engine's address,
    # on another port; the engine is recognised by address AND port
    fs1 = healthy.nodes["fs1"]
    caller = await healthy.client(fs1.ip)
    reply = await caller.call("9999")
    assert reply.status == 200
    assert (reply.get("X-Node") or "").startswith("fs")
    # and an unregistered number from the engine's own socket is still not sent back
    assert (await fs1.call("9999")).status == 404


async def test_keepalive_options_answered_under_any_name(healthy: Edge) -> None:
    engine_side = SipClient(healthy.nodes["ast1"].ip, healthy.internal_addr)
    await engine_side.open()
    healthy.clients.append(engine_side)
    cid = engine_side.request("OPTIONS", None)  # R-URI is the edge's address
    assert (await engine_side.final(cid)).status == 200
    # Asterisk's qualify names the edge by its compose service name
    call_id = uuid.uuid4().hex
    engine_side.responses[call_id] = asyncio.Queue()
    engine_side.send(
        build(
            "OPTIONS sip:kamailio:5070 SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP {engine_side.ip}:{engine_side.port};branch=z9hG4bK{call_id}"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:asterisk@{engine_side.ip}>;tag=q1"),
                ("To", "<sip:kamailio:5070>"),
                ("Call-ID", call_id),
                ("CSeq", "1 OPTIONS"),
            ],
        ),
        healthy.internal_addr,
    )
    assert (await engine_side.final(call_id)).status == 200
    assert all(n.invites() == [] for n in healthy.nodes.values())


async def test_prefix_alone_is_incomplete(healthy: Edge) -> None:
    caller = await healthy.client()
    assert (await caller.call("*2")).status == 484
    assert all(n.invites() == [] for n in healthy.nodes.values())


async def test_dead_node_is_taken_out_and_put_back_when_it_answers(healthy: Edge) -> None:
    fs1, fs2 = healthy.nodes["fs1"], healthy.nodes["fs2"]
    fs2.alive = False
    await healthy.wait_flags("fs2", lambda f: f.startswith("I"), within=6)

    caller = await healthy.client()
    replies = [await caller.call("9999") for _ in range(4)]
    assert [r.get("X-Node") for r in replies] == ["fs1"] * 4
    assert fs2.invites() == []  # not even tried: no call waited for its timeout

    fs2.alive = True
    await healthy.wait_flags("fs2", lambda f: f.startswith("A"), within=6)
    fs1.received.clear()
    replies = [await caller.call("9999") for _ in range(4)]
    assert sorted(r.get("X-Node") or "" for r in replies) == ["fs1", "fs1", "fs2", "fs2"]


async def test_probe_answers_other_than_5xx_keep_a_node_in(healthy: Edge) -> None:
    ast1 = healthy.nodes["ast1"]
    ast1.options = 401  # e.g. Asterisk challenging the probe: alive all the same
    pings = ast1.options_count()
    deadline = time.monotonic() + 8
    while ast1.options_count() < pings + 3:  # three probes answered 401
        assert time.monotonic() < deadline, "probes stopped"
        await asyncio.sleep(0.2)
    assert healthy.node_flags()["ast1"].startswith("A")

    ast1.options = 503  # alive but refusing service: taken out
    await healthy.wait_flags("ast1", lambda f: f.startswith("I"), within=6)
    ast1.options = 200
    await healthy.wait_flags("ast1", lambda f: f.startswith("A"), within=6)


async def test_invite_timeout_fails_over_to_the_next_node(healthy: Edge) -> None:
    fs2 = healthy.nodes["fs2"]
    fs2.invite = "silent"  # still answers OPTIONS
    caller = await healthy.client()
    replies = []
    for _ in range(2):  # round-robin: one of the two starts on fs2
        started = time.monotonic()
        reply = await caller.call("9999", timeout=INVITE_TIMEOUT_MS / 1000 + 5)
        replies.append((reply, time.monotonic() - started))

    assert [r.status for r, _ in replies] == [200, 200]
    assert [r.get("X-Node") for r, _ in replies] == ["fs1", "fs1"]
    assert len(fs2.invites()) == 1
    slow = max(elapsed for _, elapsed in replies)
    assert slow >= INVITE_TIMEOUT_MS / 1000 * 0.9
    # the timed-out node is out until its OPTIONS answers put it back
    failed_call = fs2.invites()[0].call_id
    assert any(r.call_id == failed_call for r, _ in replies)
    await healthy.wait_flags("fs2", lambda f: f.startswith("A"), within=6)


async def test_5xx_fails_over_and_all_failing_gives_5xx(healthy: Edge) -> None:
    fs1, fs2 = healthy.nodes["fs1"], healthy.nodes["fs2"]
    fs1.invite = "503"
    caller = await healthy.client()
    replies = [await caller.call("9999") for _ in range(2)]
    assert [r.status for r in replies] == [200, 200]
    assert [r.get("X-Node") for r in replies] == ["fs2", "fs2"]
    assert len(fs1.invites()) >= 1

    await healthy.all_healthy()
    fs1.invite = fs2.invite = "503"
    reply = await caller.call("9999")
    assert 500 <= reply.status < 600
    assert len(fs1.invites()) == 1 and len(fs2.invites()) == 1  # each tried once


async def test_no_active_node_gives_503_at_once(healthy: Edge) -> None:
    ast1 = healthy.nodes["ast1"]
    ast1.alive = False
    await healthy.wait_flags("ast1", lambda f: f.startswith("I"), within=6)
    caller = await healthy.client()
    reply = await caller.call("*29999")
    assert reply.status == 503
    assert reply.first_line == "SIP/2.0 503 No Engine Available"
    assert ast1.invites() == []  # answered at once, nothing sent to the dead node


async def test_malformed_requests_are_rejected(healthy: Edge) -> None:
    caller = await healthy.client()

    cid = caller.request("INVITE", "9999", cseq="1 BYE")  # CSeq method mismatch
    assert (await caller.final(cid)).status == 400

    cid = caller.request("INVITE", "9999", cseq="x INVITE")  # bad CSeq number
    assert (await caller.final(cid)).status == 400

    cid = caller.request("INVITE", "9999", omit=("Max-Forwards",), extra=[("Max-Forwards", "0")])
    assert (await caller.final(cid)).status == 483

    # not SIP at all: dropped without a reply
    caller.send(b"\x00\x01garbage that is not SIP\r\n\r\n", healthy.addr)
    cid = caller.request("INVITE", "9999", omit=("From", "To"))  # missing required headers
    with pytest.raises(TimeoutError):
        await caller.final(cid, timeout=1.0)

    assert all(n.invites() == [] for n in healthy.nodes.values())
    # and the edge keeps serving
    assert (await caller.call("9999")).status == 200


async def register(
    edge: Edge,
    phone: SipClient,
    extension: str,
    *,
    contact: str | None = None,
    password: str = AGENT_PASSWORD,
    auth_user: str | None = None,
) -> SipMessage:
    """REGISTER ``extension`` with digest auth as ``auth_user`` (the extension by default);
    ``contact`` "host:port" as the phone sees itself (a NATed phone's private address), its
    socket by default."""
    contact = contact or f"{phone.ip}:{phone.port}"
    register_uri = f"sip:{EDGE_IP}:{edge.port}"

    def headers() -> list[tuple[str, str]]:
        return [
            ("Via", f"SIP/2.0/UDP {contact};branch=z9hG4bK{uuid.uuid4().hex};rport"),
            ("To", f"<sip:{extension}@{EDGE_IP}>"),
            ("Contact", f"<sip:{extension}@{contact}>"),
            ("Expires", "120"),
        ]

    omit = ("Via", "To", "Contact")
    challenge = await phone.final(phone.request("REGISTER", None, omit=omit, extra=headers()))
    assert challenge.status == 401
    authorization = digest_authorization(
        challenge.get("WWW-Authenticate") or "",
        "REGISTER",
        register_uri,
        auth_user or extension,
        password,
    )
    call_id = phone.request(
        "REGISTER",
        None,
        cseq="2 REGISTER",
        omit=omit,
        extra=[*headers(), ("Authorization", authorization)],
    )
    return await phone.final(call_id)


async def test_agent_phone_registers_with_digest_and_receives_calls(healthy: Edge) -> None:
    phone = await healthy.client()
    assert (await register(healthy, phone, "1001", password="wrong")).status == 401
    ok = await register(healthy, phone, "1001")
    assert ok.status == 200
    assert f"{phone.ip}:{phone.port}" in (ok.get("Contact") or "")

    # an engine node calls the agent: delivered to the phone, not dispatched to engines
    engine_side = healthy.nodes["fs1"]
    reply = await engine_side.call("1001")
    assert reply.status == 200
    assert [r.method for r in phone.requests] == ["INVITE"]
    assert phone.requests[0].ruri.startswith(f"sip:1001@{phone.ip}:{phone.port}")

    # engines cannot reach an unregistered number through the edge (no loop back to them)
    assert (await engine_side.call("1002")).status == 404
    # a caller dialling the agent's extension reaches the phone too
    caller = await healthy.client()
    assert (await caller.call("1001")).status == 200
    assert len(phone.requests) == 2
    assert all(n.invites() == [] for n in healthy.nodes.values())


async def test_registration_needs_matching_auth_user(healthy: Edge) -> None:
    phone = await healthy.client()
    # credentials of 1001 used to register 1009
    assert (await register(healthy, phone, "1009", auth_user="1001")).status == 403
    # 1009 stays unregistered: a call to it goes to the engines, not to this phone
    reply = await (await healthy.client()).call("1009")
    assert (reply.get("X-Node") or "").startswith("fs")
    assert phone.requests == []


async def test_phone_behind_nat_is_reached_at_its_source_and_kept_open(healthy: Edge) -> None:
    phone = await healthy.client()
    private = "192.168.77.77:5062"  # what the phone believes its address is
    ok = await register(healthy, phone, "1004", contact=private)
    assert ok.status == 200

    caller = await healthy.client()
    assert (await caller.call("1004")).status == 200
    invites = [r for r in phone.requests if r.method == "INVITE"]
    assert len(invites) == 1  # delivered to the address the REGISTER came from
    assert invites[0].ruri.startswith(f"sip:1004@{private}")

    # NAT keep-alive: OPTIONS pings reach the phone (KAMAILIO_NATPING_INTERVAL=1 here)
    deadline = time.monotonic() + 5
    while not any(r.method == "OPTIONS" for r in phone.requests):
        assert time.monotonic() < deadline, "no NAT keep-alive OPTIONS within 5 s"
        await asyncio.sleep(0.2)


async def test_flood_from_one_address_is_banned(healthy: Edge) -> None:
    flooder = await healthy.client(FLOODER_IP)
    call_ids = [flooder.request("OPTIONS", None) for _ in range(300)]
    await asyncio.sleep(1.0)
    answered = sum(1 for cid in call_ids if not flooder.responses[cid].empty())
    assert 0 < answered < 150, answered

    # the address stays banned ...
    with pytest.raises(TimeoutError):
        await flooder.final(flooder.request("OPTIONS", None), timeout=1.0)
    # ... while other callers are served
    caller = await healthy.client()
    assert (await caller.call("9999")).status == 200
    assert "flood from 127.0.0.9" in healthy.log.read_text(errors="replace")


async def test_call_load_balancing_counts_active_calls(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run_dir = tmp_path_factory.mktemp("kamailio-call-load")
    async with running_edge(run_dir, KAMAILIO_ALGORITHM="10", KAMAILIO_MAX_LOAD="2") as edge:
        caller = await edge.client()
        calls = [await caller.call("9999") for _ in range(4)]
        assert [c.status for c in calls] == [200] * 4
        served = [c.get("X-Node") or "" for c in calls]
        assert sorted(served) == ["fs1", "fs1", "fs2", "fs2"], served
        for ok in calls:
            caller.in_dialog(ok, "ACK", 1)

        # both nodes carry KAMAILIO_MAX_LOAD calls: no node can take another
        assert (await caller.call("9999")).status == 503

        # hanging up one call on fs1 frees a slot there, and only there
        ended = next(c for c in calls if c.get("X-Node") == "fs1")
        caller.in_dialog(ended, "BYE", 2)
        assert (await caller.final(ended.call_id)).status == 200
        reply = await caller.call("9999")
        assert reply.status == 200 and reply.get("X-Node") == "fs1"


async def test_a_node_added_to_the_list_takes_calls_after_reload(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run_dir = tmp_path_factory.mktemp("kamailio-reload")
    async with running_edge(run_dir, freeswitch=("fs1",)) as edge:
        fs2 = edge.nodes["fs2"]
        assert edge.node_flags()["fs2"] == "?"
        caller = await edge.client()
        assert [(await caller.call("9999")).get("X-Node") for _ in range(2)] == ["fs1"] * 2

        listing = run_dir / "dispatcher.list"
        listing.write_text(listing.read_text() + f"1 sip:{fs2.ip}:{fs2.port} 0 0 duid=fs2\n")
        subprocess.run([str(KAMCMD), "-s", edge.ctl, "dispatcher.reload"], check=True, timeout=5)
        await edge.wait_flags("fs2", lambda f: f.startswith("A"), within=6)
        served = sorted([(await caller.call("9999")).get("X-Node") or "" for _ in range(4)])
        assert served == ["fs1", "fs1", "fs2", "fs2"]


async def test_the_sip_user_agent_calls_through_the_edge(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The tests' SIP user agent (tests/sip_ua.py) on both sides of the edge: a caller, and
    an endpoint standing in for the only FreeSWITCH node."""
    run_dir = tmp_path_factory.mktemp("kamailio-ua")
    async with (
        SipEndpoint(NODE_IPS["fs1"], audio="tone") as node,
        SipCaller(CALLER_IP) as phone,
        running_edge(run_dir, freeswitch=(), FREESWITCH_NODES=f"{node.host}:{node.port}") as edge,
    ):
        dialled = f"sip:9999@{EDGE_IP}:{edge.port}"
        # answered: record-routed both ways, media end to end, the node hangs up
        call = await phone.dial(dialled)
        assert await call.wait_final(5) == 200
        far = await node.wait_invite(1)
        assert far.invite is not None and far.invite.user == "9999"
        assert f"{EDGE_IP}:{edge.port}" in call.route_set[0]  # the caller's first hop
        assert f"{EDGE_IP}:{edge.internal_port}" in far.route_set[0]  # the node's
        await call.send_dtmf("42")
        await wait_until(lambda: far.rtp.digits == "42", 2)
        assert far.rtp.rx_audible > 10 and call.rtp.rx_audible > 10
        assert await far.bye() == 200
        assert await call.wait_ended(2) == "remote_bye"

        # the caller hangs up
        call = await phone.dial(dialled)
        assert await call.wait_final(5) == 200
        far = await node.wait_invite(1)
        assert await call.bye() == 200
        assert await far.wait_ended(2) == "remote_bye"

        # ringing, then cancelled through the edge
        node.policy = "no_answer"
        call = await phone.dial(dialled)
        await call.wait_status(180, 2)
        assert await call.cancel() == 487
        far = await node.wait_invite(1)
        assert await far.wait_ended(2) == "cancelled"
        assert node.errors == [] and phone.errors == []
