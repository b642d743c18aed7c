"""Menus at runtime: PostgreSQL rows -> validated, compiled MenuSet -> Redis -> workers.

* :func:`appserver.menus.loader.load_source` reads the menu tables in one consistent snapshot.
* :class:`appserver.menus.publisher.MenuPublisher` publishes a compiled
  :class:`ivr.compile.MenuSet` under a new monotonic version (see :mod:`appserver.menus.keys`)
  or records why a candidate was rejected.
* :class:`appserver.menus.reloader.MenuReloader` LISTENs on ``callyard_config``, debounces,
  recompiles and publishes; an invalid edit leaves the last valid version live.
* :class:`appserver.menus.readers.MenuSetReader` (sync, redis-py: the gevent FreeSWITCH
  worker) and :class:`appserver.menus.readers.AsyncMenuSetReader` (redis.asyncio: the Asterisk
  worker, the API) fetch the current MenuSet and follow updates. A running call keeps the
  MenuSet object it started with.
"""
