"""Fixtures of the real-engine layer: the real FreeSWITCH and Asterisk of ``../shared/engines``
with the project's own configuration, and Callyard's processes against them.

Every test here is marked ``real_engine``; all of them skip with one reason when the engines
are absent (a newcomer's machine) or the tests do not run as root. CI has both.
"""

from __future__ import annotations

import math
import shutil
import struct
import tempfile
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from engines import (
    FS_LOG,
    FS_SOUNDS,
    FreeswitchConf,
    build_freeswitch_conf,
    start_freeswitch,
    unavailable_reason,
)
from engines import stop as stop_engine
from fs_probe import FreeswitchProbe
from stack import Stack

from appserver.embedded import free_port
from appserver.store.migrations import migrate

REASON = unavailable_reason()

# Prompts the scenario flow (tests/flows.py) plays that the engines' stock sounds lack:
# short tones written into the engines' sound folders for the session, removed afterwards.
TEST_PROMPTS = ("ivr/sales", "ivr/support", "ivr/sales-deep", "ivr/invalid", "ivr/timeout",
                "ivr/goodbye", "ivr/unavailable", "ivr/queue-closed")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real_engine)
            if REASON:
                item.add_marker(pytest.mark.skip(reason=REASON))


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


@pytest.fixture(scope="session")
def test_sounds() -> Iterator[None]:
    """The scenario flow's prompts on both engines (only files that do not exist yet)."""
    created: list[Path] = []
    for folder in (FS_SOUNDS,):
        for name in TEST_PROMPTS:
            path = folder / f"{name}.wav"
            if not path.exists():
                write_tone(path, 0.6)
                created.append(path)
    yield
    for path in created:
        path.unlink(missing_ok=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def real_database(database_url: str) -> str:
    """A migrated database of its own for the real-engine session."""
    admin = await asyncpg.connect(database_url)
    name = f"callyard_real_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    return url


@pytest.fixture(scope="session")
def real_redis_url(_redis_server: str) -> str:
    import redis

    url = _redis_server.rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def stack(real_dir: Path, real_database: str, real_redis_url: str) -> Iterator[Stack]:
    """``callyard api`` (publishes menus and queues to Redis) and ``cdr-writer``."""
    s = Stack(real_dir, real_database, real_redis_url)
    s.api()
    s.start("cdr-writer", "cdr-writer")
    yield s
    s.stop_all()


@pytest.fixture(scope="session")
def freeswitch_engine(real_dir: Path, test_sounds: None) -> Iterator[FreeswitchConf]:
    conf = FreeswitchConf(workers=(free_port(),))
    directory = build_freeswitch_conf(real_dir / "freeswitch", conf)
    FS_LOG.parent.mkdir(parents=True, exist_ok=True)
    start_freeswitch(directory)
    yield conf
    stop_engine("freeswitch")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def freeswitch(
    freeswitch_engine: FreeswitchConf, stack: Stack
) -> AsyncIterator[FreeswitchProbe]:
    """A ``callyard freeswitch`` worker serving the real engine, and a probe placing calls."""
    port = freeswitch_engine.workers[0]
    stack.start(
        "freeswitch", "freeswitch", ready_port=port,
        CALLYARD_APPS="flows:factory",
        CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{port}",
        CALLYARD_FREESWITCH_ESL="127.0.0.1:8021:ClueCon",
        CALLYARD_FREESWITCH_DIAL_TEMPLATE="loopback/{target}/callyard-test-parties",
    )
    probe = FreeswitchProbe()
    await probe.start()
    yield probe
    await probe.stop()
