"""Fixtures of the engine layer: Callyard's real processes (``callyard api``, ``cdr-writer``,
the workers) serving calls on four targets: both simulators, and the real FreeSWITCH and
Asterisk of ``../shared/engines`` started with the project's own configuration.

Tests on a real engine are marked ``real_engine`` and skip, with one reason, when the engines
are absent (a newcomer's machine) or the tests do not run as root. CI has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import shutil
import socket
import struct
import tempfile
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import ivr_menus
import pytest
import pytest_asyncio
from api_support import LK_KEY, LK_SECRET, LiveKitStandIn, livekit_stand_in
from asterisk_fixtures import asterisk, asterisk_engine, asterisk_probe, asterisk_worker  # noqa: F401
from engines import (
    AST_SOUNDS,
    FS_LOG,
    FS_SOUNDS,
    FreeswitchConf,
    build_freeswitch_conf,
    exclusive,
    render,
    start_freeswitch,
    unavailable_reason,
)
from engines import stop as stop_engine
from fs_probe import FreeswitchProbe
from sip_ua import Call, Policy, SipEndpoint
from stack import Process, Stack, callyard

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.caller import EngineSimulator
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.store.migrations import migrate

REASON = unavailable_reason()
REAL_TARGETS = ("freeswitch", "asterisk")
SIM_TARGETS = ("freeswitch-sim", "asterisk-sim")
TARGETS = (*SIM_TARGETS, *REAL_TARGETS)  # a test parametrized on ``target`` gets ``engine``
# The real FreeSWITCH with ingress park (its own context, two workers taking parked calls over
# inbound ESL): a target of the call scenarios (tests/real/test_scenarios_real.py).
PARK_TARGET, PARK_CONTEXT = "freeswitch-park", "callyard-park"
# The ESL simulator with ingress park (two workers taking its parked calls), likewise.
SIM_PARK_TARGET = "freeswitch-sim-park"

# Prompts the scenario flow (tests/flows.py) and the IVR set under test (tests/ivr_menus.py)
# play: short tones written into the engines' sound folders for the session (only where no
# file exists yet), removed afterwards.
TEST_PROMPTS = (
    "ivr/sales", "ivr/support", "ivr/sales-deep", "ivr/invalid", "ivr/timeout", "ivr/goodbye",
    "ivr/unavailable", "ivr/queue-closed", *(f"callyard-test/{n}" for n in ivr_menus.SOUNDS),
)  # fmt: skip


# Where each target's engine writes recordings (voicemail): the real Asterisk in its spool.
_RECORDINGS_ROOT = Path(tempfile.gettempdir()) / f"callyard-real-recordings-{uuid.uuid4().hex[:8]}"
RECORDINGS = {
    "freeswitch": _RECORDINGS_ROOT / "freeswitch",
    "freeswitch-sim": _RECORDINGS_ROOT / "freeswitch-sim",
    "asterisk-sim": _RECORDINGS_ROOT / "asterisk-sim",
    "asterisk": Path("/opt/asterisk/var/spool/asterisk/recording"),
}
for _folder in RECORDINGS.values():
    _folder.mkdir(parents=True, exist_ok=True)  # FreeSWITCH's record creates no directory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(item, "callspec", None)
        target = params.params.get("target") if params is not None else None
        if target in REAL_TARGETS or set(REAL_TARGETS) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_engine)
            if REASON:
                item.add_marker(pytest.mark.skip(reason=REASON))


def time_scale(target: str) -> float:
    """Real engines play real-length prompts: stretch the simulators' timeouts for them."""
    return 1.0 if target in (*SIM_TARGETS, SIM_PARK_TARGET) else 3.0


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> EngineSimulator:
    """The target named by the test's ``target`` parameter (a simulator or a real engine)."""
    name = request.node.callspec.params["target"]
    return request.getfixturevalue(name.replace("-", "_"))  # type: ignore[no-any-return]


def write_tone(path: Path, seconds: float, hz: float = 440.0) -> None:
    """An 8 kHz 16-bit mono WAV tone: the format both engines play from ``.wav``."""
    rate = 8000
    frames = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(int(rate * seconds))
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


@pytest.fixture(scope="session")
def real_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="callyard-real-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


SOUNDS_LOCK = "/tmp/callyard-real-sounds.lock"


@pytest.fixture(scope="session")
def test_sounds() -> Iterator[None]:
    """The product's own sounds installed as an operator would (``callyard sounds <folder>``),
    and the tests' prompts as tones; what did not exist before is removed afterwards, by the
    last test session using them (each holds a shared lock: another checkout's session may
    be playing them on the other engine, which the per-engine lock does not cover)."""
    folders = (FS_SOUNDS, AST_SOUNDS)
    with open(SOUNDS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        before = {p for folder in folders for p in folder.rglob("*.wav")}
        for folder in folders:
            callyard("sounds", str(folder), "--set", "queue", "--set", "callyard",
                     "--set", "voicemail", "--set", "recording")
            for name in TEST_PROMPTS:
                path = folder / f"{name}.wav"
                if not path.exists():
                    write_tone(path, 0.6)
        yield
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session still uses them (it removes what it added)
        for path in {p for folder in folders for p in folder.rglob("*.wav")} - before:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- Callyard's processes


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def real_database(database_url: str) -> str:
    """A migrated database of its own, holding the IVR set under test."""
    admin = await asyncpg.connect(database_url)
    name = f"callyard_real_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await ivr_menus.seed(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="session")
def real_redis_url(_redis_server: str) -> str:
    import redis

    url = _redis_server.rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    return url


PARTIES: dict[str, Policy] = {"1001": "answer", "1002": "busy", "1003": "no_answer"}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sip_parties() -> AsyncIterator[SipEndpoint]:
    """The phones Callyard dials on the real engines, over real SIP: 1001 answers and hangs
    up after 1.5 s, 1002 is busy, 1003 never answers; agents' phones (11xx) answer."""
    endpoint = SipEndpoint(user="parties", audio="tone",
                           policy=lambda invite: PARTIES.get(invite.user, "answer"))
    await endpoint.start()

    hangups: set[asyncio.Task[None]] = set()

    async def party_1001_hangs_up() -> None:
        while True:
            call = await endpoint.wait_invite(timeout=3600)
            if call.invite.user == "1001":
                hangup = asyncio.create_task(_bye_after(call, 1.5))
                hangups.add(hangup)
                hangup.add_done_callback(hangups.discard)

    task = asyncio.create_task(party_1001_hangs_up())
    yield endpoint
    task.cancel()
    endpoint.close()


async def _bye_after(call: Call, seconds: float) -> None:
    with contextlib.suppress(Exception):
        await call.wait_status(200, 10)
        await asyncio.sleep(seconds)
        await call.bye(5)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def livekit() -> AsyncIterator[tuple[LiveKitStandIn, SipEndpoint]]:
    """LiveKit stood in for: its Twirp API (rooms, for ``callyard api``) and LiveKit SIP (a
    SIP user agent answering the engines' INVITEs for ``sip:call-<id>@...``)."""
    async with livekit_stand_in() as api:
        sip = SipEndpoint(user="livekit-sip", audio="tone")
        await sip.start()
        yield api, sip
        sip.close()


@pytest.fixture(scope="session")
def stack(real_dir: Path, real_database: str, real_redis_url: str,
          livekit: tuple[LiveKitStandIn, SipEndpoint]) -> Iterator[Stack]:
    """``callyard api`` (publishes menus and queues to Redis) and ``cdr-writer``."""
    api, sip = livekit
    s = Stack(real_dir, real_database, real_redis_url, common={
        "CALLYARD_LIVEKIT_URL": api.url, "CALLYARD_LIVEKIT_API_KEY": LK_KEY,
        "CALLYARD_LIVEKIT_API_SECRET": LK_SECRET,
        "CALLYARD_LIVEKIT_SIP_URI": f"sip:{sip.host}:{sip.port}",
        "CALLYARD_MENU_TRIALS": "1",  # tests/real/test_trial_calls_real.py
    })  # fmt: skip
    s.api()
    s.start("cdr-writer", "cdr-writer")
    s.wait_published()
    yield s
    s.stop_all()


# ---------------------------------------------------------------- the four targets


@dataclass
class FsWorkers:
    """The FreeSWITCH target's workers: the dialplan tries ``ports`` in order; the first
    worker runs for the whole session (name ``names[0]``), the second only when a test
    starts it. ``esl`` is the node's inbound Event Socket for the workers."""

    stack: Stack
    names: tuple[str, str]
    ports: tuple[int, int]
    esl: str
    env: dict[str, str] = field(default_factory=dict)

    def start(self, index: int) -> Process:
        name, port = self.names[index], self.ports[index]
        health = free_port()
        process = self.stack.start(
            name, "freeswitch", ready_port=port, CALLYARD_APPS="flows:factory",
            CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{port}", CALLYARD_FREESWITCH_ESL=self.esl,
            CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{health}", **self.env,
        )
        process.health_port = health
        return process


@pytest.fixture(scope="session")
def freeswitch_engine(real_dir: Path, test_sounds: None) -> Iterator[FreeswitchConf]:
    conf = FreeswitchConf(workers=(free_port(), free_port()))
    with exclusive("freeswitch"):
        conf.directory = build_freeswitch_conf(real_dir / "freeswitch", conf)
        FS_LOG.parent.mkdir(parents=True, exist_ok=True)
        start_freeswitch(conf.directory)
        yield conf
        stop_engine("freeswitch")


@pytest.fixture(scope="session")
def freeswitch_workers(freeswitch_engine: FreeswitchConf, stack: Stack,
                       sip_parties: SipEndpoint) -> FsWorkers:
    dial = f"sofia/callyard/{{target}}@{sip_parties.host}:{sip_parties.port}"
    workers = FsWorkers(stack, ("freeswitch", "freeswitch-2"), freeswitch_engine.workers,
                        "127.0.0.1:8021:ClueCon", {"CALLYARD_FREESWITCH_DIAL_TEMPLATE": dial,
                        "CALLYARD_FREESWITCH_RECORDINGS_DIR": str(RECORDINGS["freeswitch"])})
    workers.start(0)
    return workers


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def freeswitch(freeswitch_workers: FsWorkers) -> AsyncIterator[FreeswitchProbe]:
    """The real FreeSWITCH served by a ``callyard freeswitch`` worker; a probe placing calls."""
    probe = FreeswitchProbe()
    await probe.start()
    yield probe
    await probe.stop()


@dataclass
class ParkWorkers:
    """The workers taking the park context's calls, by worker id (as call records name their
    owners: ``freeswitch-<host>-<pid>``)."""

    by_id: dict[str, Process]

    def restart(self, worker_id: str) -> None:
        """Start a killed worker again; it has a new id (its pid)."""
        process = self.by_id.pop(worker_id)
        process.start()
        assert process.proc is not None
        self.by_id[f"freeswitch-{socket.gethostname()}-{process.proc.pid}"] = process


@pytest.fixture(scope="session")
def freeswitch_park_workers(freeswitch_engine: FreeswitchConf, freeswitch_workers: FsWorkers,
                            freeswitch: FreeswitchProbe) -> Iterator[ParkWorkers]:
    """The shipped dialplan rendered with ingress park as ``PARK_CONTEXT``, in the running
    engine (loaded by the first probe's ``reloadxml``), and two workers taking its calls."""
    rendered = render(freeswitch_engine.directory.parent / "fs-rendered-park", {
        "freeswitch_ingress": "park", "freeswitch_context": PARK_CONTEXT})
    source = rendered / "freeswitch-conf" / "conf" / "dialplan" / "callyard.xml"
    (freeswitch_engine.directory / "dialplan" / f"{PARK_CONTEXT}.xml").write_text(
        source.read_text())
    workers = ParkWorkers({})
    for name in ("park-1", "park-2"):
        port = free_port()
        process = freeswitch_workers.stack.start(
            name, "freeswitch", ready_port=port, **{**freeswitch_workers.env,
            "CALLYARD_APPS": "flows:factory", "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{port}",
            "CALLYARD_FREESWITCH_ESL": freeswitch_workers.esl,
            "CALLYARD_HEALTH_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLYARD_FREESWITCH_INGRESS": "park",
            "CALLYARD_FREESWITCH_PARK_CONTEXT": PARK_CONTEXT})  # fmt: skip
        assert process.proc is not None
        workers.by_id[f"freeswitch-{socket.gethostname()}-{process.proc.pid}"] = process
    yield workers
    for process in workers.by_id.values():
        process.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def freeswitch_park(freeswitch_park_workers: ParkWorkers
                          ) -> AsyncIterator[FreeswitchProbe]:
    """A probe placing calls into the park context (``PARK_TARGET``)."""
    probe = FreeswitchProbe(context=PARK_CONTEXT)
    await probe.start()
    assert "+OK" in await probe.api("reloadxml")
    await asyncio.sleep(1.0)  # the workers' connections subscribed
    yield probe
    await probe.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def freeswitch_sim_workers(stack: Stack) -> AsyncIterator[tuple[FreeswitchSimulator,
                                                                      FsWorkers]]:
    ports = (free_port(), free_port())
    behaviour = Behaviour(prompt_seconds=0.15, talk_seconds=60, talk={"1001": 1.5},
                          no_answer_seconds=30, endpoints=dict(PARTIES))
    sim = FreeswitchSimulator([("127.0.0.1", port) for port in ports], behaviour)
    await sim.start(esl_port=0)
    workers = FsWorkers(stack, ("freeswitch-sim", "freeswitch-sim-2"), ports,
                        f"127.0.0.1:{sim.esl_port}:{sim.password}",
                        {"CALLYARD_FREESWITCH_RECORDINGS_DIR": str(RECORDINGS["freeswitch-sim"])})
    workers.start(0)
    yield sim, workers
    await sim.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def freeswitch_sim_park(stack: Stack) -> AsyncIterator[FreeswitchSimulator]:
    """The ESL simulator in park mode (in this process; calls parked in ``PARK_CONTEXT``)
    and two ``callyard freeswitch`` workers taking its parked calls (``SIM_PARK_TARGET``)."""
    behaviour = Behaviour(prompt_seconds=0.15, talk_seconds=60, talk={"1001": 1.5},
                          no_answer_seconds=30, endpoints=dict(PARTIES))
    sim = FreeswitchSimulator([], behaviour, ingress="park", context=PARK_CONTEXT)
    await sim.start(esl_port=0)
    for name in ("freeswitch-sim-park-1", "freeswitch-sim-park-2"):
        port = free_port()
        stack.start(name, "freeswitch", ready_port=port, CALLYARD_APPS="flows:factory",
                    CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{port}",
                    CALLYARD_FREESWITCH_ESL=f"127.0.0.1:{sim.esl_port}:{sim.password}",
                    CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{free_port()}",
                    CALLYARD_FREESWITCH_INGRESS="park",
                    CALLYARD_FREESWITCH_PARK_CONTEXT=PARK_CONTEXT,
                    CALLYARD_FREESWITCH_RECORDINGS_DIR=str(RECORDINGS["freeswitch-sim"]))
    deadline = asyncio.get_running_loop().time() + 30
    while sum(1 for s in list(sim._listeners) if s.hears("CHANNEL_PARK")) < 2:
        assert asyncio.get_running_loop().time() < deadline, "park workers never subscribed"
        await asyncio.sleep(0.1)
    yield sim
    await sim.stop()


@pytest.fixture(scope="session")
def freeswitch_sim(
    freeswitch_sim_workers: tuple[FreeswitchSimulator, FsWorkers],
) -> FreeswitchSimulator:
    """The ESL simulator (in this process), served by a ``callyard freeswitch`` worker."""
    return freeswitch_sim_workers[0]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk_sim(stack: Stack) -> AsyncIterator[AriSimulator]:
    """The ARI simulator (in this process) and a ``callyard asterisk`` worker serving it."""
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.15), endpoints=[
        SimEndpoint("PJSIP", "1001", behaviour="answer", talk_seconds=1.5),
        SimEndpoint("PJSIP", "1002", behaviour="busy"),
        SimEndpoint("PJSIP", "1003", behaviour="no_answer"),
    ], unknown_endpoint=SimEndpoint("PJSIP", "agents", talk_seconds=60),
        recording_dir=RECORDINGS["asterisk-sim"])  # fmt: skip
    await sim.start()
    stack.start("asterisk-sim", "asterisk", CALLYARD_APPS="flows:factory",
                CALLYARD_ASTERISK_ARI=sim.url_with_credentials)
    await sim.wait_app_connected("callyard", timeout=30)
    yield sim
    await sim.stop()
