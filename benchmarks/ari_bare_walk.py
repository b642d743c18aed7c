"""The bench walk by a bare ARI controller: a yardstick for `bench_native.py --ways bare`.

    .venv/bin/python benchmarks/ari_bare_walk.py http://127.0.0.1:8088 user secret app
    # prints "ready" once its events socket is open and filtered, then serves

What ARI itself costs Asterisk for this walk, and a controller's floor: the client and the
events socket of Callyard's Asterisk worker (its own ``AriClient``: keep-alive HTTP on
httptools, the same event filter), the walk's five requests, and nothing else: no flow, no
timers, no channel variables, no Redis, no CDR, no AMI. ``bench_native.py`` serves it beside
the native dialplan IVR and Callyard, in the same rounds.

Walk: on ``StasisStart``, answer, then the greeting (one play of the three prompts); on the
digit 1 during it, stop it, then the goodbye; on the goodbye's ``PlaybackFinished``, hang up
(as the worker does). Anything else (``#``, a digit after the greeting) is ignored.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appserver.asterisk.ari import AriClient
from appserver.settings import AriNode

GREETING = ["sound:callyard-bench/welcome", "sound:callyard-bench/tone",
            "sound:callyard-bench/enter-digits"]
GOODBYE = ["sound:callyard-bench/goodbye"]


class Walk:
    """Each call's requests run in order on a task of its own (answer before play)."""

    def __init__(self, ari: AriClient) -> None:
        self.ari = ari
        self.greeting: dict[str, str] = {}  # channel -> its greeting's playback id
        self.goodbye: dict[str, str] = {}  # the goodbye's playback id -> channel
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "StasisStart":
            channel = event["channel"]["id"]
            self.greeting[channel] = uuid.uuid4().hex
            self._spawn(self._answer(channel, self.greeting[channel]))
        elif kind == "ChannelDtmfReceived" and event["digit"] == "1":
            channel = event["channel"]["id"]
            playback = self.greeting.pop(channel, None)
            if playback is not None:
                goodbye = uuid.uuid4().hex
                self.goodbye[goodbye] = channel
                self._spawn(self._goodbye(channel, playback, goodbye))
        elif kind == "PlaybackFinished":
            channel = self.goodbye.pop(event["playback"]["id"], None)
            if channel is not None:
                self._spawn(self.ari.hangup(channel))
        elif kind == "StasisEnd":
            self.greeting.pop(event["channel"]["id"], None)

    async def _answer(self, channel: str, greeting: str) -> None:
        await self.ari.answer(channel)
        await self.ari.play(channel, greeting, GREETING)

    async def _goodbye(self, channel: str, greeting: str, goodbye: str) -> None:
        await self.ari.stop_playback(greeting)
        await self.ari.play(channel, goodbye, GOODBYE)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"request failed: {task.exception()}", file=sys.stderr)  # e.g. caller gone


async def serve(url: str, user: str, password: str, app: str) -> None:
    ari = AriClient(AriNode(url=url, username=user, password=password), app)
    walk = Walk(ari)
    try:
        async with ari.events(open_timeout=10) as texts:
            print("ready", flush=True)
            async for text in texts:
                walk.on_event(json.loads(text))
    finally:
        await ari.close()


if __name__ == "__main__":
    asyncio.run(serve(*sys.argv[1:5]))
