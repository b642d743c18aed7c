"""The worker's AMI session asks only for the events it reads (``Events: system,call`` and an
AMI ``Filter``): on the real Asterisk 22 and on the AMI simulator, how the mask and the
filter act, and what the worker's monitor receives while calls run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from ast_probe import AsteriskProbe
from asterisk_fixtures import RealAsterisk
from engines import AMI_SECRET, AMI_USER, asterisk_cli

from appserver.asterisk.ami import EVENT_FILTER, EVENTS_READ, LOCAL_DEVICES_FILTER, AmiMonitor
from appserver.devkit.sim.ami import AmiSimulator
from appserver.settings import load_settings


async def session_answers(port: int, user: str, secret: str,
                          change_device: Callable[[str, str], None]) -> list[str]:
    """One AMI session's responses and events (their first line, and a device's state),
    for: a login for the call class alone, filters (a broken one, an unknown operation, a "!"
    one, the worker's two), then two device state changes, one of them filtered out. Left out:
    events before the last filter's response (other activity on the engine may send some
    while the filters are not all in) and other devices' states."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    device = f"Custom:ami-{uuid.uuid4().hex[:8]}"

    async def read() -> dict[str, str]:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)

    def line(fields: dict[str, str]) -> str:
        if "Response" in fields:
            return f"{fields['ActionID']} {fields['Response']}: {fields.get('Message')}"
        if fields.get("Event") == "DeviceStateChange":
            return f"DeviceStateChange {fields['Device'] == device} {fields['State']}"
        return fields.get("Event", "?")

    try:
        await reader.readline()  # the greeting
        writer.write(
            f"Action: Login\r\nActionID: 1\r\nUsername: {user}\r\nSecret: {secret}\r\n"
            "Events: call\r\n\r\n"
            "Action: Filter\r\nActionID: 2\r\nOperation: Add\r\nFilter: ^Event: (\r\n\r\n"
            "Action: Filter\r\nActionID: 3\r\nOperation: Remove\r\nFilter: x\r\n\r\n"
            f"Action: Filter\r\nActionID: 4\r\nOperation: Add\r\nFilter: !{device}-\r\n\r\n"
            f"Action: Filter\r\nActionID: 5\r\nOperation: Add\r\nFilter: {EVENT_FILTER}\r\n\r\n"
            "Action: Filter\r\nActionID: 6\r\nOperation: Add\r\n"
            f"Filter: {LOCAL_DEVICES_FILTER}\r\n\r\n"
            .encode())
        await writer.drain()
        out: list[str] = []
        with contextlib.suppress(TimeoutError):
            while not out or not out[-1].startswith("6 "):  # the filters are all in
                fields = await read()
                if "Response" in fields:
                    out.append(line(fields))
            change_device(f"{device}-x", "INUSE")  # refused by the "!" filter
            change_device(device, "BUSY")
            while not out[-1].endswith("BUSY"):
                fields = await read()
                if not fields.get("Device", device).startswith(device):
                    continue  # another device's state (a phone of another test), not ours
                out.append(line(fields))
        return out
    finally:
        writer.close()


EXPECTED = [
    "1 Success: Authentication accepted",  # and no FullyBooted: it is in class system
    "2 Error: Filter did not compile.  Check the syntax of the filter given.",
    "3 Error: Unknown operation",
    "4 Success: Success",
    "5 Success: Success",
    "6 Success: Success",
    "DeviceStateChange True BUSY",
]


async def test_mask_and_filters_on_the_simulator() -> None:
    async with AmiSimulator(username=AMI_USER, secret=AMI_SECRET) as ami:
        assert await session_answers(ami.port, AMI_USER, AMI_SECRET,
                                     ami.device_state) == EXPECTED


async def test_mask_and_filters_on_the_real_asterisk(asterisk_engine: RealAsterisk) -> None:
    def change(device: str, state: str) -> None:
        asterisk_cli(f"devstate change {device} {state}")

    assert await session_answers(asterisk_engine.conf.ami_port, AMI_USER, AMI_SECRET,
                                 change) == EXPECTED


async def test_the_monitor_gets_device_states_and_no_call_events(
        asterisk_engine: RealAsterisk, asterisk: AsteriskProbe) -> None:
    """A call through the worker's menu makes Asterisk publish about 30 AMI events
    (Newchannel, VarSet, Newexten, DTMF ...) and the state changes of its Local channel's
    device (``Local/9999@...``); the monitor's session gets none of them, and still every
    other device state change."""
    device = f"Custom:ami-{uuid.uuid4().hex[:8]}"
    monitor = AmiMonitor(load_settings(asterisk_ami=asterisk_engine.conf.ami).asterisk_ami)
    received: list[str] = []
    devices: set[str] = set()

    def seen(_: object, event: Any) -> None:
        received.append(event.event)
        if event.event == "DeviceStateChange":
            devices.add(str(event.get("Device")))

    await monitor.start()
    try:
        monitor.managers[0].register_event("*", seen)
        await monitor.wait_authenticated()
        await asyncio.sleep(0.3)  # the filter's response
        call = await asterisk.place_call("9999")
        await call.wait_for_prompt("file:ivr/welcome", 10)
        await call.press("0")
        await call.wait_ended(10)
        asterisk_cli(f"devstate change {device} INUSE")
        for _ in range(300):
            if monitor.devices.get(device) == "INUSE":
                break
            await asyncio.sleep(0.01)
        assert monitor.devices.get(device) == "INUSE"
        assert "DeviceStateChange" in received
        assert set(received) <= set(EVENTS_READ), received
        assert not [d for d in devices if d.startswith("Local/")], devices
        assert not [d for d in monitor.devices if d.startswith("Local/")], monitor.devices
    finally:
        await monitor.stop()
