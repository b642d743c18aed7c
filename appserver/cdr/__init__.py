"""Call detail records: one per call, never lost, never doubled.

* :mod:`appserver.cdr.flow` -- :class:`CdrFlow`, a pure wrapper around a call's flow that
  watches commands and events and emits one :class:`CdrRecord` when the call ends.
* :mod:`appserver.cdr.sink` -- workers append records to the Redis stream ``callyard:cdrs``
  (asyncio or gevent, after its Redis client; records are buffered in memory while Redis
  is away).
* :mod:`appserver.cdr.writer` -- ``callyard cdr-writer``: a consumer group reads the stream
  and inserts batches into PostgreSQL, acknowledging only after commit.

Keep this package's top level light: the gevent worker imports it after monkey-patching.
"""

STREAM = "callyard:cdrs"
GROUP = "cdr-writers"
DEAD_STREAM = "callyard:cdrs:dead"  # entries that can never be stored (with the reason)
