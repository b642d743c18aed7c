"""The worker's one ARI client, built from an :class:`~appserver.settings.AriNode`.

REST: every operation the worker uses (a call's are the
:class:`~appserver.asterisk.port.AriPort`), as ``method path?query`` over keep-alive HTTP/1.1
(:mod:`appserver.asterisk.http`, parsed by httptools), Basic credentials in each request. An
HTTP status >= 400 raises :class:`~appserver.asterisk.port.AriError` (status and Asterisk's
message); no answer raises ``OSError`` (``ConnectionError``, ``TimeoutError``). Values travel
percent-encoded in the query string, as ARI takes them.

Events: :meth:`AriClient.events` opens the application's events WebSocket with aiohttp (its
reader is C-accelerated) and yields the events' JSON texts; a close ends the iteration and an
error raises ``ConnectionError``: a close is never swallowed (aioari could swallow one). A
subscription that vanishes while the socket stays open is the link's watchdog's business
(:mod:`appserver.asterisk.link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from appserver.asterisk.http import HttpPool
from appserver.asterisk.port import AriError
from appserver.settings import AriNode

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 4 * 2**20  # one ARI event (a channel with many variables stays far below)
# Event types no part of the worker reads: Asterisk is asked not to send them (each carries a
# channel snapshot Asterisk serialises and the worker parses; ChannelVarset alone comes for
# every variable set). A feature that starts reading one removes it here.
UNUSED_EVENTS = (
    "ChannelVarset", "ChannelDialplan", "ChannelCallerId", "ChannelConnectedLine",
    "ChannelStateChange", "PlaybackStarted", "PlaybackContinuing", "ChannelTalkingStarted",
    "ChannelTalkingFinished", "ChannelHold", "ChannelUnhold", "ChannelToneDetected",
    "ChannelEnteredBridge", "ChannelLeftBridge", "BridgeCreated", "BridgeDestroyed",
    "BridgeMerged", "BridgeVideoSourceChanged", "DeviceStateChanged", "EndpointStateChange",
    "ContactStatusChange", "PeerStatusChange", "TextMessageReceived",
)
FILTER_ATTEMPTS = 5  # the application registers as the socket opens: a moment later at worst


def _q(value: str) -> str:
    return quote(value, safe="")


class AriClient:
    """One node's ARI for the Stasis application ``app``. :meth:`close` when done."""

    def __init__(self, node: AriNode, app: str, *, timeout: float = 30.0,
                 limit: int = 100) -> None:
        self.app = app
        self.base = node.url.rstrip("/") + "/ari"
        self._auth = {"Authorization": aiohttp.encode_basic_auth(node.username, node.password)}
        self._pool = HttpPool(self.base, {**self._auth, "Accept": "application/json"},
                              timeout=timeout, limit=limit)

    async def close(self) -> None:
        await self._pool.close()

    async def _send(self, method: str, path: str, query: str = "") -> bytes:
        response = await self._pool.request(method, f"{path}?{query}" if query else path)
        if response.status >= 400:
            raise AriError(response.status, _message(response.body))
        return response.body

    async def _get(self, path: str) -> Any:
        return json.loads(await self._send("GET", path))

    # ---------------------------------------------------------------- a call's operations

    async def answer(self, channel_id: str) -> None:
        await self._send("POST", f"/channels/{_q(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "") -> None:
        await self._send("DELETE", f"/channels/{_q(channel_id)}",
                         f"reason={_q(reason)}" if reason else "")

    async def play(self, channel_id: str, playback_id: str, media: list[str],
                   lang: str = "") -> None:
        """``media`` URIs never hold a comma (ARI splits the list on commas, even encoded
        ones): :func:`appserver.asterisk.media.prompt_media` makes sure of it."""
        query = f"media={','.join(quote(m, safe=':/') for m in media)}&playbackId={_q(playback_id)}"
        if lang:
            query += f"&lang={_q(lang)}"
        await self._send("POST", f"/channels/{_q(channel_id)}/play", query)

    async def record(self, channel_id: str, name: str, max_seconds: int, beep: bool,
                     terminate_on: str) -> None:
        """``POST /channels/{id}/record``: a WAV under Asterisk's recordings directory
        (``astspooldir/recording``), replacing one of that name (a voicemail taken again)."""
        query = (f"name={_q(name)}&format=wav&maxDurationSeconds={int(max_seconds)}"
                 f"&beep={'true' if beep else 'false'}&terminateOn={_q(terminate_on)}"
                 "&ifExists=overwrite")
        await self._send("POST", f"/channels/{_q(channel_id)}/record", query)

    async def stop_playback(self, playback_id: str) -> None:
        await self._send("DELETE", f"/playbacks/{_q(playback_id)}")

    async def start_moh(self, channel_id: str, moh_class: str = "") -> None:
        await self._send("POST", f"/channels/{_q(channel_id)}/moh",
                         f"mohClass={_q(moh_class)}" if moh_class else "")

    async def stop_moh(self, channel_id: str) -> None:
        await self._send("DELETE", f"/channels/{_q(channel_id)}/moh")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self._send("POST", f"/channels/{_q(channel_id)}/variable",
                         f"variable={_q(name)}&value={_q(value)}")

    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str) -> None:
        await self._send("POST", f"/channels/{_q(channel_id)}/continue",
                         f"context={_q(context)}&extension={_q(extension)}&priority=1")

    async def originate(self, leg_id: str, endpoint: str, *, app_args: str, originator: str,
                        caller_id: str, timeout: int) -> None:
        """A new channel ``leg_id`` dialing ``endpoint``, entering this application (from
        ``originator``'s call; "" for none, as for a callback)."""
        linked = f"&originator={_q(originator)}" if originator else ""
        await self._send("POST", "/channels", (
            f"endpoint={_q(endpoint)}&app={_q(self.app)}&appArgs={_q(app_args)}"
            f"&channelId={_q(leg_id)}{linked}&callerId={_q(caller_id)}&timeout={timeout}"))

    async def snoop(self, channel_id: str, snoop_id: str, *, spy: str, whisper: str,
                    app_args: str) -> None:
        """A snoop channel ``snoop_id`` on ``channel_id``, entering this application: it
        hears the channel's audio in direction ``spy``, and what it is sent is mixed into
        direction ``whisper`` (``out``: what the channel hears; ``in``: what it says)."""
        await self._send("POST", f"/channels/{_q(channel_id)}/snoop", (
            f"spy={_q(spy)}&whisper={_q(whisper)}&app={_q(self.app)}&appArgs={_q(app_args)}"
            f"&snoopId={_q(snoop_id)}"))

    async def create_bridge(self, bridge_id: str, name: str) -> None:
        await self._send("POST", "/bridges",
                         f"type=mixing&bridgeId={_q(bridge_id)}&name={_q(name)}")

    async def add_to_bridge(self, bridge_id: str, channel_ids: list[str]) -> None:
        await self._send("POST", f"/bridges/{_q(bridge_id)}/addChannel",
                         "channel=" + ",".join(_q(c) for c in channel_ids))

    async def remove_from_bridge(self, bridge_id: str, channel_id: str) -> None:
        await self._send("POST", f"/bridges/{_q(bridge_id)}/removeChannel",
                         f"channel={_q(channel_id)}")

    async def record_bridge(self, bridge_id: str, name: str) -> None:
        """``POST /bridges/{id}/record``: the bridge's mix as a WAV under Asterisk's
        recordings directory, until stopped or the bridge goes."""
        await self._send("POST", f"/bridges/{_q(bridge_id)}/record",
                         f"name={_q(name)}&format=wav&ifExists=overwrite")

    async def live_recording(self, name: str, operation: str) -> None:
        """``pause`` / ``unpause`` / ``stop`` a live recording."""
        method, path = {"pause": ("POST", "pause"), "unpause": ("DELETE", "pause"),
                        "stop": ("POST", "stop")}[operation]
        await self._send(method, f"/recordings/live/{_q(name)}/{path}")

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self._send("DELETE", f"/bridges/{_q(bridge_id)}")

    async def channel(self, channel_id: str) -> dict[str, Any]:
        """The channel's JSON model (404: it is gone)."""
        data: dict[str, Any] = await self._get(f"/channels/{_q(channel_id)}")
        return data

    async def playback(self, playback_id: str) -> dict[str, Any]:
        """The playback's JSON model (404: it finished)."""
        data: dict[str, Any] = await self._get(f"/playbacks/{_q(playback_id)}")
        return data

    # ---------------------------------------------------------------- the link's operations

    async def application_channels(self) -> set[str]:
        """Ids of the channels in this application (none when it is not registered)."""
        try:
            data = await self._get(f"/applications/{_q(self.app)}")
        except AriError as exc:
            if exc.status == 404:
                return set()
            raise
        return {str(c) for c in data.get("channel_ids", [])}

    async def user_event(self, name: str) -> None:
        """A user event to this application (comes back as ``ChannelUserevent``)."""
        await self._send("POST", f"/events/user/{_q(name)}", f"application={_q(self.app)}")

    @contextlib.asynccontextmanager
    async def events(self, open_timeout: float, unused: tuple[str, ...] = UNUSED_EVENTS
                     ) -> AsyncIterator[AsyncIterator[str]]:
        """The application's events WebSocket, open, with Asterisk asked to leave out the
        ``unused`` event types: iterate it for the events' JSON texts."""
        url = f"{self.base}/events?app={_q(self.app)}"
        async with aiohttp.ClientSession(headers=self._auth) as session:
            try:
                async with asyncio.timeout(open_timeout):
                    ws = await session.ws_connect(
                        url, max_msg_size=MAX_EVENT_BYTES,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
            except aiohttp.ClientError as exc:
                raise ConnectionError(f"ARI events socket: {exc}") from exc
            async with ws:
                if unused:
                    await self._filter_events(session, unused, open_timeout)
                yield _texts(ws)

    async def _filter_events(self, session: aiohttp.ClientSession, unused: tuple[str, ...],
                             timeout: float) -> None:
        """``PUT /applications/{app}/eventFilter`` (Asterisk 16.3+); refused or unanswered
        within ``timeout``: all events keep coming, which costs CPU, not correctness."""
        url = f"{self.base}/applications/{_q(self.app)}/eventFilter"
        body = {"disallowed": [{"type": name} for name in unused]}
        status, text = 0, ""
        for attempt in range(FILTER_ATTEMPTS):
            try:
                async with session.put(url, json=body,
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                    status, text = response.status, await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, text = 0, str(exc)
            if status != 404:
                break
            await asyncio.sleep(0.05 * (attempt + 1))  # not registered yet
        if status >= 300 or status == 0:
            log.info("Asterisk did not take the event filter; every event type will come",
                     extra={"app": self.app, "status": status, "error": text[:200]})


async def _texts(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[str]:
    async for msg in ws:  # ends when the socket closes
        if msg.type is aiohttp.WSMsgType.TEXT:
            yield msg.data
        elif msg.type is aiohttp.WSMsgType.ERROR:
            raise ConnectionError(f"ARI events socket: {ws.exception()}")


def _message(body: bytes) -> str:
    """Asterisk's error message (``{"message": ...}``), else the body as text."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return str(data["message"]) if isinstance(data, dict) and "message" in data else text
