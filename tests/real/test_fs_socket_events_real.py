"""Which events an outbound Event Socket hears, on the real FreeSWITCH 1.10.12 and on the ESL
simulator (mod_event_socket.c: ``myevents`` adds its 23 event types and keeps only this
channel's events; without it, ``event`` hears every channel's, and a ``filter`` keeps the
events that carry its header and value; a second ``myevents`` is refused). The worker sends
``filter Unique-ID <its call>`` instead of ``myevents`` (see the driver's
``setup_commands``); these pin the simulator to the engine for whatever speaks to it.

Three calls reach a socket server of this test: the *observer* subscribes without
``myevents``, the *actor* with it, answers and plays a short silence, the *filtered* one
subscribes without it behind ``filter Unique-ID <its own uuid>``. The observer hears the
actor's events; the actor and the filtered one hear only their own; ``event ALL`` then
``nixevent X`` is every event type but X.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from esl_raw_client import RawClient
from fs_probe import FreeswitchProbe

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.esl.behaviour import Behaviour
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator
from appserver.freeswitch import esl_codec as codec

EVENTS = "CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE"


class Session(RawClient):
    """One outbound socket a call opened to this test."""

    uuid = ""  # its channel's, from the connect reply

    async def reply_text(self, line: str, headers: list[tuple[str, str]] | None = None) -> str:
        await self.send(line, headers or [])
        frame = await self.until(lambda f: f.content_type == "command/reply", 5)
        return frame.reply_text.strip()

    async def events(self, seconds: float) -> list[codec.EslEvent]:
        """The events heard in the next ``seconds``."""
        out: list[codec.EslEvent] = []
        deadline = asyncio.get_running_loop().time() + seconds
        with contextlib.suppress(TimeoutError, EOFError):
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                frame = await self.next(left)
                if frame.content_type.startswith("text/event"):
                    out.append(codec.parse_event(frame))
        return out


@contextlib.asynccontextmanager
async def socket_server() -> AsyncIterator[tuple[int, asyncio.Queue[Session]]]:
    sessions: asyncio.Queue[Session] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(reader, writer)
        await session.send("connect")
        reply = await session.until(lambda f: f.content_type == "command/reply", 5)
        session.uuid = codec.url_decode(reply.headers.get("Unique-ID", ""))
        await sessions.put(session)

    port = free_port()
    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield port, sessions
    finally:
        server.close()


async def run(place: Callable[[], Awaitable[None]], sessions: asyncio.Queue[Session]
              ) -> dict[str, object]:
    """The three calls' sockets: what each heard, and the replies to their subscriptions."""
    await place()
    observer = await asyncio.wait_for(sessions.get(), 10)
    await place()
    actor = await asyncio.wait_for(sessions.get(), 10)
    await place()
    filtered = await asyncio.wait_for(sessions.get(), 10)
    got: dict[str, object] = {
        "filter": (await filtered.reply_text(f"filter Unique-ID {filtered.uuid}")
                   ).replace(filtered.uuid, "<uuid>"),
        "filtered event": await filtered.reply_text(f"event plain {EVENTS}"),
        "observer event": await observer.reply_text(f"event plain {EVENTS}"),
        "actor myevents": await actor.reply_text("myevents"),
        "actor myevents again": await actor.reply_text("myevents"),
    }
    await actor.reply_text("nixevent ALL")
    await actor.reply_text(f"event plain {EVENTS}")
    tag = str(uuid.uuid4())
    for app, arg in (("answer", ""), ("playback", "silence_stream://200")):
        headers = [("call-command", "execute"), ("execute-app-name", app),
                   ("event-lock", "true"), ("Event-UUID", tag)]
        await actor.reply_text("sendmsg", headers + ([("execute-app-arg", arg)] if arg else []))
    await filtered.reply_text("sendmsg", [("call-command", "execute"),
                                          ("execute-app-name", "answer"), ("event-lock", "true")])
    actor_heard, observer_heard, filtered_heard = await asyncio.gather(
        actor.events(1.5), observer.events(1.5), filtered.events(1.5))
    actor_uuid = next(e.get("Unique-ID") for e in actor_heard
                      if e.get("Application-UUID") == tag)
    assert actor_uuid == actor.uuid
    got["actor heard only its own"] = {e.get("Unique-ID") for e in actor_heard} == {actor_uuid}
    got["filtered heard only its own"] = (
        {(e.get("Unique-ID"), e.get("Application")) for e in filtered_heard}
        == {(filtered.uuid, "answer")})
    got["observer heard the actor"] = any(e.get("Unique-ID") == actor_uuid
                                          and e.get("Application") == "playback"
                                          for e in observer_heard)
    # every type but one: ``event ALL``, then ``nixevent`` of that one
    for line in ("nixevent ALL", "event plain ALL", "nixevent CHANNEL_EXECUTE"):
        await observer.reply_text(line)
    await actor.reply_text("sendmsg", [("call-command", "execute"),
                                       ("execute-app-name", "playback"),
                                       ("execute-app-arg", "silence_stream://200"),
                                       ("event-lock", "true")])
    names = {e.name for e in await observer.events(1.5) if e.get("Unique-ID") == actor_uuid}
    got["observer heard all but CHANNEL_EXECUTE"] = (
        "CHANNEL_EXECUTE_COMPLETE" in names and "CHANNEL_EXECUTE" not in names)
    for session in (observer, actor, filtered):
        with contextlib.suppress(Exception):
            await session.reply_text("sendmsg", [("call-command", "hangup"),
                                            ("hangup-cause", "NORMAL_CLEARING")])
        session.writer.close()
    return got


EXPECTED = {
    "filter": "+OK filter added. [Unique-ID]=[<uuid>]",
    "filtered event": "+OK event listener enabled plain",
    "observer event": "+OK event listener enabled plain",
    "actor myevents": "+OK Events Enabled",
    "actor myevents again": "-ERR aready enabled.",  # (sic) mod_event_socket's text
    "actor heard only its own": True,
    "filtered heard only its own": True,
    "observer heard the actor": True,
    "observer heard all but CHANNEL_EXECUTE": True,
}


async def test_outbound_socket_events_on_the_real_freeswitch(freeswitch: FreeswitchProbe) -> None:
    async with socket_server() as (port, sessions):
        async def place() -> None:
            reply = await freeswitch._command(
                f"bgapi originate loopback/9999/callyard &socket('127.0.0.1:{port} async full')")
            assert reply.reply_text.startswith("+OK")

        assert await run(place, sessions) == EXPECTED


async def test_outbound_socket_events_on_the_simulator() -> None:
    async with socket_server() as (port, sessions):
        sim = FreeswitchSimulator([("127.0.0.1", port)], Behaviour(prompt_seconds=0.05))

        async def place() -> None:
            await sim.place_call("9999")

        try:
            assert await run(place, sessions) == EXPECTED
        finally:
            await sim.stop()
