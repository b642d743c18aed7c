"""Workers append finished CDRs to the Redis stream ``callyard:cdrs``.

A flow hands its record to the sink synchronously (flows are pure); the sink buffers it in
memory and a background task (asyncio) or greenlet (gevent) writes the buffer with
pipelined ``XADD ... MAXLEN ~ N``. While Redis is unreachable the buffer keeps growing and
writes are retried with backoff, so a Redis restart loses nothing; ``flush`` at shutdown
waits for the buffer to drain. A retried write whose reply was lost may add an entry twice:
the writer's insert is idempotent on the call id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from appserver.cdr import STREAM
from appserver.cdr.record import CdrRecord

log = logging.getLogger("callyard.cdr")

DEFAULT_MAXLEN = 1_000_000  # a safety cap only: the writer deletes entries once stored
BATCH = 200
RETRY_MIN, RETRY_MAX = 0.2, 5.0


class _Buffer:
    def __init__(self, stream: str, maxlen: int) -> None:
        self.stream = stream
        self.maxlen = maxlen
        self.pending: deque[CdrRecord] = deque()
        self.written = 0
        self.failures = 0  # consecutive failed writes

    def batch(self) -> list[CdrRecord]:
        return [self.pending[i] for i in range(min(BATCH, len(self.pending)))]

    def done(self, count: int, ok: bool, error: str = "") -> float:
        """After a write attempt: the delay before the next one."""
        if ok:
            for _ in range(count):
                self.pending.popleft()
            self.written += count
            if self.failures:
                log.info("CDR stream reachable again", extra={"buffered": len(self.pending)})
            self.failures = 0
            return 0.0
        self.failures += 1
        if self.failures == 1 or self.failures % 20 == 0:
            log.warning("cannot append CDRs to Redis; keeping them in memory",
                        extra={"buffered": len(self.pending), "error": error})
        return float(min(RETRY_MAX, RETRY_MIN * 2 ** min(self.failures, 8)))

    def xadd_all(self, pipe: Any, records: list[CdrRecord]) -> None:
        for record in records:
            pipe.xadd(self.stream, record.to_fields(), maxlen=self.maxlen, approximate=True)


class AsyncCdrSink:
    """For the asyncio worker: ``sink(record)`` from flows, ``await flush()`` at shutdown."""

    def __init__(self, redis: Any, *, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.buffer = _Buffer(stream, maxlen)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, record: CdrRecord) -> None:
        self.buffer.pending.append(record)
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.buffer.pending)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer.pending:
                records = self.buffer.batch()
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        self.buffer.xadd_all(pipe, records)
                        await pipe.execute()
                    delay = self.buffer.done(len(records), True)
                except Exception as exc:  # any Redis/network failure: keep and retry
                    delay = self.buffer.done(len(records), False, str(exc) or type(exc).__name__)
                    await asyncio.sleep(delay)
            self._idle.set()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record is in Redis; False if some are still buffered."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.error("CDRs not written to Redis at shutdown",
                      extra={"buffered": len(self.buffer.pending)})
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> bool:
        ok = await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return ok


class GeventCdrSink:
    """For the gevent worker (``redis.Redis`` on patched sockets): same behaviour."""

    def __init__(self, redis: Any, *, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        import gevent.event

        self.redis = redis
        self.buffer = _Buffer(stream, maxlen)
        self._wake = gevent.event.Event()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._greenlet: Any = None

    def __call__(self, record: CdrRecord) -> None:
        self.buffer.pending.append(record)
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.buffer.pending)

    def start(self) -> None:
        import gevent

        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import gevent

        while True:
            self._wake.wait()
            self._wake.clear()
            while self.buffer.pending:
                records = self.buffer.batch()
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    self.buffer.xadd_all(pipe, records)
                    pipe.execute()
                    delay = self.buffer.done(len(records), True)
                except Exception as exc:  # any Redis/network failure: keep and retry
                    delay = self.buffer.done(len(records), False, str(exc) or type(exc).__name__)
                    gevent.sleep(delay)
            self._idle.set()

    def flush(self, timeout: float = 10.0) -> bool:
        if not self._idle.wait(timeout):
            log.error("CDRs not written to Redis at shutdown",
                      extra={"buffered": len(self.buffer.pending)})
            return False
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        ok = self.flush(timeout)
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        return ok
