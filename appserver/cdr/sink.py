"""Workers append finished CDRs to the Redis stream ``callyard:cdrs``.

A flow hands its record to the sink synchronously (flows are pure); the sink buffers it in
memory and a background task (asyncio) or greenlet (gevent: the shell that goes with its
Redis client, see :mod:`appserver.shells`) writes the buffer with pipelined
``XADD ... MAXLEN ~ N``. While Redis is unreachable the buffer keeps growing and
writes are retried with backoff, so a Redis restart loses nothing; ``flush`` at shutdown
waits for the buffer to drain. A retried write whose reply was lost may add an entry twice:
the writer's insert is idempotent on the call id.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from appserver.cdr import STREAM
from appserver.cdr.record import CdrRecord
from appserver.shells import for_client, reply

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


class CdrSink:
    """``sink(record)`` from flows; ``start()`` once, ``await stop()`` at shutdown."""

    def __init__(self, redis: Any, *, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.shell = for_client(redis)
        self.buffer = _Buffer(stream, maxlen)
        self._wake = self.shell.event()
        self._idle = self.shell.event()
        self._idle.set()
        self._progress = self.shell.event()  # set (and replaced) after each write
        self._task: Any = None

    def __call__(self, record: CdrRecord) -> None:
        self.buffer.pending.append(record)
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.buffer.pending)

    async def durable(self) -> None:
        """Return once every record handed over so far is in Redis (records are written in
        order). A worker awaits it before it forgets a call whose CDR is on its way: were it
        killed in between, neither the CDR nor the trace of the call would be left."""
        mark = self.buffer.written + len(self.buffer.pending)
        while self.buffer.written < mark:
            await self._progress.wait()

    def start(self) -> None:
        self._task = self.shell.spawn(self._run(), "cdr-sink")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer.pending:
                records = self.buffer.batch()
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    self.buffer.xadd_all(pipe, records)
                    await reply(pipe.execute())
                    delay = self.buffer.done(len(records), True)
                    progress, self._progress = self._progress, self.shell.event()
                    progress.set()
                except Exception as exc:  # any Redis/network failure: keep and retry
                    self.shell.honour_cancel()
                    delay = self.buffer.done(len(records), False, str(exc) or type(exc).__name__)
                    await self.shell.sleep(delay)
            self._idle.set()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record is in Redis; False if some are still buffered."""
        if not await self._idle.wait(timeout):
            log.error("CDRs not written to Redis at shutdown",
                      extra={"buffered": len(self.buffer.pending)})
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> bool:
        ok = await self.flush(timeout)
        if self._task is not None:
            await self.shell.cancel([self._task], 1.0)
            self._task = None
        return ok
