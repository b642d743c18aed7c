"""AMI: the simulator's framing against the captures, and the panoramisk monitor against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from appserver.asterisk.ami import DEVICES_KEY, AmiMonitor
from appserver.devkit.sim.ami import AmiSimulator
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint
from appserver.settings import SettingsError, load_settings

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "captures"


@pytest_asyncio.fixture(loop_scope="session")
async def sims() -> AsyncIterator[tuple[AriSimulator, AmiSimulator]]:
    ari = AriSimulator(endpoints=[SimEndpoint("PJSIP", "1001", state="offline")])
    await ari.start()
    ami = AmiSimulator(ari)
    await ami.start()
    yield ari, ami
    await ami.stop()
    await ari.stop()


async def _exchange(ami: AmiSimulator, text: str) -> str:
    reader, writer = await asyncio.open_connection(ami.host, ami.port)
    writer.write(text.encode())
    await writer.drain()
    data = b""
    with contextlib.suppress(TimeoutError):
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 0.3)
            if not chunk:
                break
            data += chunk
    writer.close()
    return data.decode()


async def test_framing_matches_capture(sims: tuple[AriSimulator, AmiSimulator]) -> None:
    ari, ami = sims
    await ari.place_call("9999")  # no app connected: it sits in the fallback for a moment
    text = await _exchange(
        ami,
        "Action: Login\r\nActionID: 1\r\nUsername: callyard\r\nSecret: callyard\r\n"
        "Events: on\r\n\r\nAction: CoreShowChannels\r\nActionID: 2\r\n\r\n"
        "Action: Logoff\r\nActionID: 3\r\n\r\n",
    )
    assert text.startswith("Asterisk Call Manager/11.0.0\r\n")
    assert ("Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n"
            in text)
    assert "Event: FullyBooted\r\nPrivilege: system,all\r\n" in text
    assert "Response: Success\r\nActionID: 2\r\nEventList: start\r\n" in text
    assert "Event: CoreShowChannel\r\nActionID: 2\r\nChannel: PJSIP/trunk-" in text
    assert "Event: CoreShowChannelsComplete\r\nActionID: 2\r\nEventList: Complete\r\n" in text
    assert text.endswith("Response: Goodbye\r\nActionID: 3\r\nMessage: Thanks for all the fish."
                         "\r\n\r\n")
    capture = CAPTURES / "asterisk-ami-session.txt"
    if capture.exists():
        raw = capture.read_text()
        assert raw.startswith("Asterisk Call Manager/11.0.0")
        assert "Message: Authentication accepted" in raw
        assert "Message: Thanks for all the fish." in raw
        assert "Event: CoreShowChannelsComplete\nActionID: 4\nEventList: Complete" in raw


async def test_bad_login_is_refused(sims: tuple[AriSimulator, AmiSimulator]) -> None:
    _, ami = sims
    text = await _exchange(ami, "Action: Login\r\nActionID: 9\r\nUsername: x\r\nSecret: y\r\n\r\n")
    assert "Response: Error\r\nActionID: 9\r\nMessage: Authentication failed\r\n\r\n" in text
    text = await _exchange(ami, "Action: Ping\r\nActionID: 1\r\n\r\n")
    assert "Message: Permission denied" in text


async def test_monitor_tracks_device_state(
    sims: tuple[AriSimulator, AmiSimulator], redis_client: Redis
) -> None:
    ari, ami = sims
    settings = load_settings(asterisk_ami=ami.address)
    changes: list[tuple[str, str]] = []
    monitor = AmiMonitor(settings.asterisk_ami, redis=redis_client,
                         on_device_state=lambda node, dev, state: changes.append((dev, state)))
    await monitor.start()
    try:
        await monitor.wait_authenticated()
        ami.register_device("1001")
        for _ in range(200):
            if changes:
                break
            await asyncio.sleep(0.01)
        assert changes[0] == ("PJSIP/1001", "NOT_INUSE")
        assert ari.endpoints["PJSIP/1001"].state == "online"
        ami.device_state("PJSIP/1001", "INUSE")
        ami.unregister_device("1001")
        for _ in range(200):
            if monitor.devices.get("PJSIP/1001") == "UNAVAILABLE":
                break
            await asyncio.sleep(0.01)
        assert [s for d, s in changes] == ["NOT_INUSE", "INUSE", "UNAVAILABLE"]
        await monitor.drain()
        assert await redis_client.hget(DEVICES_KEY, "PJSIP/1001") == "UNAVAILABLE"
        channels = await monitor.core_show_channels()
        assert channels == []
        call = await ari.place_call("9999")
        channels = await monitor.core_show_channels()
        assert [c["Uniqueid"] for c in channels] == [call.call_id]
        assert "coreshowchannels" in [a.lower() for a in ami.actions]
    finally:
        await monitor.stop()


async def test_redis_keeps_the_last_of_quick_device_state_changes(
    sims: tuple[AriSimulator, AmiSimulator], redis_client: Redis
) -> None:
    """Changes that arrive together (a phone picked up and unregistered at once) reach
    Redis in the order Asterisk sent them: the hash ends with the latest state."""
    _, ami = sims
    monitor = AmiMonitor(load_settings(asterisk_ami=ami.address).asterisk_ami,
                         redis=redis_client)
    await monitor.start()
    try:
        await monitor.wait_authenticated()
        devices = [f"PJSIP/{2000 + i}" for i in range(50)]
        for device in devices:
            ami.device_state(device, "INUSE")
            ami.device_state(device, "UNAVAILABLE")
        for _ in range(500):
            if all(monitor.devices.get(d) == "UNAVAILABLE" for d in devices):
                break
            await asyncio.sleep(0.01)
        await monitor.drain()
        stored = await redis_client.hmget(DEVICES_KEY, devices)
        assert stored == ["UNAVAILABLE"] * len(devices)
    finally:
        await monitor.stop()


@pytest.mark.parametrize("value", ["host:5038:user", "host:port:user:secret"])
def test_bad_ami_setting_is_rejected(value: str) -> None:
    with pytest.raises(SettingsError):
        load_settings(asterisk_ami=value)


async def test_the_monitor_asks_only_for_the_events_it_reads(
    sims: tuple[AriSimulator, AmiSimulator]
) -> None:
    """Its session's mask and filter (as on the real Asterisk, tests/real/
    test_asterisk_ami_filter.py) leave out every call's own events."""
    _, ami = sims
    monitor = AmiMonitor(load_settings(asterisk_ami=ami.address).asterisk_ami)
    received: list[str] = []
    await monitor.start()
    try:
        monitor.managers[0].register_event("*", lambda _, event: received.append(event.event))
        await monitor.wait_authenticated()
        for _ in range(200):
            if "filter" in [a.lower() for a in ami.actions]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # its answer
        ami.emit("Newchannel", "call,all", [("Channel", "PJSIP/trunk-0001")])  # class: on
        ami.emit("VarSet", "dialplan,all", [("Variable", "ivr_menu")])  # class: off
        ami.device_state("PJSIP/1009", "RINGING")
        for _ in range(200):
            if monitor.devices.get("PJSIP/1009") == "RINGING":
                break
            await asyncio.sleep(0.01)
        assert [e for e in received if e != "FullyBooted"] == ["DeviceStateChange"]
    finally:
        await monitor.stop()
