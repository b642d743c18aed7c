"""A raw asyncio Event Socket client for tests: frames in, commands out, no Callyard driver
(the ESL simulator's tests, and a socket server of tests/real speaking to the real engine)."""

from __future__ import annotations

import asyncio

from appserver.freeswitch import esl_codec as c


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = c.FrameParser()
        self.frames: list[c.Frame] = []

    async def next(self, timeout: float = 3.0) -> c.Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError
            self.frames += self.parser.feed(data)
        return self.frames.pop(0)

    async def until(self, pred, timeout: float = 3.0) -> c.Frame:  # type: ignore[no-untyped-def]
        while True:
            frame = await self.next(timeout)
            if pred(frame):
                return frame

    async def send(self, command: str, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.writer.write(c.encode_command(command, headers))
        await self.writer.drain()

    async def reply(self, command: str) -> c.Frame:
        await self.send(command)
        return await self.until(lambda f: f.content_type in ("command/reply", "api/response"))
