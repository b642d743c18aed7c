"""The worker's ARI client (appserver.asterisk.ari, .http).

AriClient must fail like aioari (a reference ARI client) for the same request (the driver's
404 / 409 handling depends on it), send only operations of Asterisk's own swagger files, and
its HTTP connections must survive what servers do: keep-alive reuse, chunked bodies, idle
connections closed by the server, silence, garbage.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aioari
import pytest
import pytest_asyncio
from aiohttp import web_exceptions

from appserver.asterisk.ari import AriClient
from appserver.asterisk.http import HttpPool
from appserver.asterisk.media import prompt_media
from appserver.asterisk.port import AriError
from appserver.devkit.sim.ari import AriSimulator
from appserver.settings import AriNode
from ivr.calls import Prompt

# ---------------------------------------------------------------- against the ARI simulator


def node(base: str, username: str = "u", password: str = "p") -> AriNode:
    return AriNode(url=base.removesuffix("/ari"), username=username, password=password)


@pytest_asyncio.fixture(loop_scope="session")
async def ari() -> AsyncIterator[tuple[AriSimulator, Any, AriClient]]:
    sim = AriSimulator()
    await sim.start()
    client = await aioari.connect(sim.base_url + "/", sim.username, sim.password)
    run = asyncio.ensure_future(client.run(apps="callyard"))
    await sim.wait_app_connected("callyard")
    ours = AriClient(node(sim.base_url, sim.username, sim.password), "callyard")
    yield sim, client, ours
    await ours.close()
    run.cancel()
    await client.close()
    await sim.stop()


async def _ours(request: Awaitable[Any]) -> tuple[int, str]:
    with pytest.raises(AriError) as info:
        await request
    return info.value.status, info.value.text


async def _theirs(request: Awaitable[Any]) -> tuple[int, str]:
    with pytest.raises(web_exceptions.HTTPException) as info:
        await request
    return info.value.status, json.loads(info.value.text or "{}")["message"]


async def test_errors_match_aioari(ari: tuple[AriSimulator, Any, AriClient]) -> None:
    _, client, rest = ari
    pairs: list[tuple[Awaitable[Any], Awaitable[Any]]] = [
        (rest.hangup("nope"), client.channels.hangup(channelId="nope")),
        (rest.answer("nope"), client.channels.answer(channelId="nope")),
        (rest.play("nope", "pb-x", ["sound:hello"], "en"),
         client.channels.play(channelId="nope", media=["sound:hello"], playbackId="pb-x")),
        (rest.stop_playback("nope"), client.playbacks.stop(playbackId="nope")),
        (rest.start_moh("nope", "default"), client.channels.startMoh(channelId="nope")),
        (rest.stop_moh("nope"), client.channels.stopMoh(channelId="nope")),
        (rest.set_variable("nope", "x", "1"),
         client.channels.setChannelVar(channelId="nope", variable="x", value="1")),
        (rest.hangup("nope", "bogus-reason"), client.channels.hangup(channelId="nope",
                                                                     reason="bogus-reason")),
        (rest.continue_in_dialplan("nope", "ctx", "s"),
         client.channels.continueInDialplan(channelId="nope", context="ctx", extension="s",
                                            priority=1)),
        (rest.originate("leg-1", "nonsense", app_args="dial,x", originator="x",
                        caller_id='"a" <1>', timeout=5),
         client.channels.originate(endpoint="nonsense", app="callyard", appArgs="dial,x",
                                   channelId="leg-2", originator="x", callerId='"a" <1>',
                                   timeout=5)),
        (rest.add_to_bridge("nope", ["a", "b"]),
         client.bridges.addChannel(bridgeId="nope", channel=["a", "b"])),
        (rest.remove_from_bridge("nope", "a"),
         client.bridges.removeChannel(bridgeId="nope", channel="a")),
        (rest.destroy_bridge("nope"), client.bridges.destroy(bridgeId="nope")),
        (rest.channel("nope"), client.channels.get(channelId="nope")),
        (rest.playback("nope"), client.playbacks.get(playbackId="nope")),
    ]
    for ours, theirs in pairs:
        assert await _ours(ours) == await _theirs(theirs)
    assert (await _ours(rest.hangup("nope")))[0] == 404


async def test_requests_act_on_the_channel(ari: tuple[AriSimulator, Any, AriClient]) -> None:
    sim, _, rest = ari
    call = await sim.place_call("9999")
    await call.wait_for("ringing")
    for _ in range(100):
        if sim.channels[call.call_id].stasis_app:
            break
        await asyncio.sleep(0.01)
    cid = call.call_id
    assert cid in await rest.application_channels()
    assert (await rest.channel(cid))["id"] == cid
    await rest.answer(cid)
    await rest.set_variable(cid, "ivr_menu path", "main/sales & more")
    assert sim.channels[cid].variables["ivr_menu path"] == "main/sales & more"
    await rest.play(cid, "pb-1", ["sound:ivr/welcome", "digits:42"], "de")
    await call.wait_for_prompt("file:ivr/welcome")
    assert (await rest.playback("pb-1"))["id"] == "pb-1"
    pb, _ = sim.playbacks["pb-1"]
    assert pb.media == ["sound:ivr/welcome", "digits:42"] and pb.language == "de"
    await rest.stop_playback("pb-1")
    await call.transcript.wait_for(lambda e: e.detail == "file:ivr/welcome stopped")
    await rest.start_moh(cid, "jazz")
    await rest.stop_moh(cid)
    await rest.hangup(cid, "busy")
    await call.wait_ended()
    assert call.transcript.lines()[1:] == [
        "answered", "variable ivr_menu path=main/sales & more", "prompt_started file:ivr/welcome",
        "prompt_finished file:ivr/welcome stopped", "moh jazz", "moh", "hangup USER_BUSY app",
    ]


async def test_events_carry_the_applications_events(
    ari: tuple[AriSimulator, Any, AriClient]
) -> None:
    _, _, rest = ari
    async with rest.events(5) as events:
        await rest.user_event("hello")
        msg = json.loads(await asyncio.wait_for(anext(events), 5))
        assert (msg["type"], msg["eventname"], msg["application"]) == (
            "ChannelUserevent", "hello", "callyard")


async def test_wrong_credentials_are_refused() -> None:
    async with AriSimulator() as sim:
        rest = AriClient(node(sim.base_url, sim.username, "wrong"), "callyard")
        try:
            with pytest.raises(AriError) as info:
                await rest.application_channels()
            assert info.value.status == 401
            with pytest.raises(ConnectionError, match="401"):
                async with rest.events(5):
                    pass
        finally:
            await rest.close()


def test_file_prompts_are_relative_sound_names_on_asterisk() -> None:
    """Finding: file prompts accepted ../../, URLs, and on Asterisk commas, which ARI splits
    into more media (file:x,recording:secret played a stored recording)."""
    assert prompt_media(Prompt("file", " ivr/welcome.wav ")) == "sound:ivr/welcome"
    assert prompt_media(Prompt("file", "de/ivr/x-1.v2")) == "sound:de/ivr/x-1.v2"
    for bad in ("../../etc/passwd", "ivr/../../x", "/etc/passwd", "http://169.254.169.254/x",
                "x,recording:secret", "a b", "ivr/${x}"):
        assert prompt_media(Prompt("file", bad)) is None, bad


async def test_values_are_encoded_in_the_request() -> None:
    """Values travel in the query string: every one is percent-encoded, so none can add a
    parameter (&), end the request line (CR LF) or become another media item."""
    server = ScriptedServer([NO_CONTENT] * 3)
    rest = AriClient(node(await server.start()), "callyard")
    try:
        await rest.set_variable("1.2", "lang", "fr\r\nX: y&variable=other value")
        await rest.play("1.2", "pb", ["sound:a/b&c", "digits:4#"], "en&x")
        await rest.hangup("1.2", "busy\r\n")
    finally:
        await rest.close()
        await server.stop()
    lines = [head.decode().split("\r\n")[0] for head in server.requests]
    queries = [dict(parse_qsl(urlsplit(line.split(" ")[1]).query)) for line in lines]
    assert queries[0] == {"variable": "lang", "value": "fr\r\nX: y&variable=other value"}
    assert queries[1] == {"media": "sound:a/b&c,digits:4#", "playbackId": "pb", "lang": "en&x"}
    assert queries[2] == {"reason": "busy\r\n"}
    assert all(b"\r\nX: y" not in head for head in server.requests)  # no header was added


# ---------------------------------------------------------------- HttpPool against a script


class ScriptedServer:
    """Answers each request with the next scripted reply (bytes, or a callable taking the
    writer); records requests and how many connections were opened."""

    def __init__(self, replies: list[bytes | Callable[[asyncio.StreamWriter], Any]]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/ari"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                reply = self.replies.pop(0)
                if callable(reply):
                    if await reply(writer) == "close":
                        break
                else:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


NO_CONTENT = b"HTTP/1.1 204 No Content\r\nServer: Asterisk\r\nContent-Length: 0\r\n\r\n"


async def test_keep_alive_reuse_and_request_line() -> None:
    server = ScriptedServer([NO_CONTENT, NO_CONTENT,
                             b"HTTP/1.1 404 Not Found\r\nContent-Length: 31\r\n\r\n"
                             b'{"message":"Channel not found"}'])
    pool = HttpPool(await server.start(), {"Accept": "application/json"})
    try:
        assert (await pool.request("POST", "/channels/1.2/answer?api_key=u%3Ap")).status == 204
        assert (await pool.request("DELETE", "/playbacks/x")).status == 204
        missing = await pool.request("DELETE", "/channels/9")
        assert (missing.status, missing.reason) == (404, "Not Found")
        assert missing.text == '{"message":"Channel not found"}'
        assert server.connections == 1
        first = server.requests[0].decode()
        assert first.startswith("POST /ari/channels/1.2/answer?api_key=u%3Ap HTTP/1.1\r\n")
        assert "\r\nAccept: application/json\r\n" in first
        assert "\r\nContent-Length: 0\r\n" in first
    finally:
        await pool.close()
        await server.stop()


async def test_chunked_body_and_connection_close() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"a\":\r\n3;ext=1\r\n 1}\r\n0\r\n\r\n")
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    server = ScriptedServer([chunked, closing, NO_CONTENT])
    pool = HttpPool(await server.start(), {})
    try:
        assert (await pool.request("GET", "/x")).body == b'{"a": 1}'
        assert (await pool.request("GET", "/y")).body == b"{}"
        assert (await pool.request("GET", "/z")).status == 204
        assert server.connections == 2  # the server said close: a new connection
    finally:
        await pool.close()
        await server.stop()


async def test_idle_connection_closed_by_server_is_retried_once() -> None:
    async def close_silently(writer: asyncio.StreamWriter) -> str:
        return "close"  # read the request, answer nothing, close (keep-alive timeout race)

    server = ScriptedServer([NO_CONTENT, close_silently, NO_CONTENT])
    pool = HttpPool(await server.start(), {})
    try:
        assert (await pool.request("POST", "/a")).status == 204
        assert (await pool.request("POST", "/b")).status == 204  # retried on a new connection
        assert server.connections == 2
    finally:
        await pool.close()
        await server.stop()


async def test_failures_surface_as_connection_errors() -> None:
    async def half_answer(writer: asyncio.StreamWriter) -> str:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
        await writer.drain()
        return "close"

    async def silence(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1)

    server = ScriptedServer([half_answer, b"garbage\r\n\r\n", silence,
                             b"HTTP/1.1 200 OK\r\n\r\n{}"])
    pool = HttpPool(await server.start(), {}, timeout=0.2)
    try:
        with pytest.raises(ConnectionResetError):  # dropped mid-answer: never retried
            await pool.request("POST", "/a")
        with pytest.raises(ConnectionResetError, match="bad HTTP response"):
            await pool.request("POST", "/b")
        with pytest.raises(TimeoutError):
            await pool.request("POST", "/c")
        with pytest.raises(ConnectionResetError, match="without Content-Length"):
            await pool.request("POST", "/d")
    finally:
        await pool.close()
        await server.stop()
    with pytest.raises(ConnectionError, match="closed"):
        await pool.request("GET", "/closed")


def test_pool_rejects_bad_urls() -> None:
    with pytest.raises(ValueError):
        HttpPool("ftp://host/ari", {})
    pool = HttpPool("https://user:pw@[::1]:8089/ari/", {})
    assert (pool.host, pool.port, pool.path_prefix) == ("::1", 8089, "/ari")
    assert pool.ssl is not None


async def test_at_most_limit_connections() -> None:
    async def slow(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(NO_CONTENT)

    server = ScriptedServer([slow] * 6)
    pool = HttpPool(await server.start(), {}, limit=2)
    try:
        replies = await asyncio.gather(*(pool.request("POST", f"/{i}") for i in range(6)))
        assert [r.status for r in replies] == [204] * 6
        assert server.connections == 2
    finally:
        await pool.close()
        await server.stop()


async def test_requests_beyond_the_limit_wait_and_a_cancelled_one_passes_its_turn() -> None:
    async def slow(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)
        writer.write(NO_CONTENT)

    server = ScriptedServer([slow, NO_CONTENT])
    pool = HttpPool(await server.start(), {}, limit=1)
    try:
        first = asyncio.ensure_future(pool.request("POST", "/1"))
        second = asyncio.ensure_future(pool.request("POST", "/2"))
        third = asyncio.ensure_future(pool.request("POST", "/3"))
        await asyncio.sleep(0.02)
        assert len(server.requests) == 1  # the others wait for the one slot
        second.cancel()
        assert [(await first).status, (await third).status] == [204, 204]
        with pytest.raises(asyncio.CancelledError):
            await second
        assert [r.split(b" ")[1] for r in server.requests] == [b"/ari/1", b"/ari/3"]
        assert server.connections == 1 and pool._active == 0 and not pool._waiting
    finally:
        await pool.close()
        await server.stop()


async def test_a_request_times_out_between_1x_and_1_1x_the_timeout() -> None:
    """One timer per pool checks the requests in flight every tenth of the timeout: each
    times out from when it was sent, at 1x to 1.1x the timeout (plus this machine's lag)."""
    async def silence(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)

    server = ScriptedServer([silence, silence])
    pool = HttpPool(await server.start(), {}, timeout=0.5)
    loop = asyncio.get_running_loop()

    async def timed(path: str) -> float:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request("POST", path)
        return loop.time() - started

    try:
        early = asyncio.ensure_future(timed("/a"))
        await asyncio.sleep(0.23)  # between two of the timer's checks
        late = asyncio.ensure_future(timed("/b"))
        for elapsed in await asyncio.gather(early, late):
            assert 0.5 <= elapsed < 0.55 + 0.1, elapsed
        await asyncio.sleep(0.1)
        assert pool._timer is None  # nothing in flight: the timer stopped
    finally:
        await pool.close()
        await server.stop()


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "asterisk-ari-api-docs"


async def test_requests_are_asterisk_operations() -> None:
    """Each request AriClient sends is an operation of Asterisk's own swagger files: path,
    method, and only query parameters the operation declares (the required ones given)."""
    if not REFERENCE.is_dir():
        pytest.skip("Asterisk reference api-docs not available")
    operations: list[tuple[re.Pattern[str], str, set[str], set[str]]] = []
    for name in ("channels", "playbacks", "bridges", "events", "applications"):
        decl = json.loads((REFERENCE / f"{name}.json").read_text())
        for api in decl["apis"]:
            pattern = re.compile(re.sub(r"\{[^}]+\}", "[^/]+", api["path"]) + "$")
            for op in api["operations"]:
                query = [p for p in op.get("parameters", []) if p["paramType"] == "query"]
                operations.append((pattern, op["httpMethod"], {p["name"] for p in query},
                                   {p["name"] for p in query if p.get("required")}))
    ok_json = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    server = ScriptedServer([ok_json] * 18)
    rest = AriClient(node(await server.start()), "callyard")
    try:
        await rest.answer("1.2")
        await rest.hangup("1.2", "busy")
        await rest.hangup("1.2")
        await rest.play("1.2", "pb", ["sound:ivr/welcome", "digits:4 2"], "en")
        await rest.stop_playback("pb")
        await rest.start_moh("1.2", "default")
        await rest.stop_moh("1.2")
        await rest.set_variable("1.2", "CALLERID(name)", "a b")
        await rest.continue_in_dialplan("1.2", "callyard-transfer", "1000")
        await rest.originate("leg", "PJSIP/1001", app_args="dial,1.2", originator="1.2",
                             caller_id='"A" <100>', timeout=30)
        await rest.create_bridge("b1", "callyard-1.2")
        await rest.add_to_bridge("b1", ["1.2", "leg"])
        await rest.remove_from_bridge("b1", "1.2")
        await rest.destroy_bridge("b1")
        await rest.channel("1.2")
        await rest.playback("pb")
        await rest.application_channels()
        await rest.user_event("callyard-watchdog-x")
    finally:
        await rest.close()
        await server.stop()
    assert len(server.requests) == 18
    for head in server.requests:
        method, target, _ = head.decode().split("\r\n")[0].split(" ")
        parts = urlsplit(target)
        path, query = parts.path, parts.query
        assert path.startswith("/ari/")
        names = {k for k, _ in parse_qsl(query)}
        matches = [(q, required) for pattern, m, q, required in operations
                   if m == method and pattern.match(path[len("/ari"):])]
        assert matches, f"{method} {path} is not an ARI operation"
        assert any(required <= names <= q for q, required in matches), f"{method} {path}: {names}"
        assert "\r\nAuthorization: Basic dTpw\r\n" in head.decode()  # u:p
