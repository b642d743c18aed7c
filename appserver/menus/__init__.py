"""Menus at runtime: PostgreSQL rows -> validated, compiled MenuSet -> Redis -> workers.

* :func:`appserver.menus.loader.load_source` reads the menu tables in one consistent snapshot.
* :class:`appserver.menus.publisher.MenuPublisher` publishes a compiled
  :class:`ivr.compile.MenuSet` under a new monotonic version (see :mod:`appserver.menus.keys`)
  or records why a candidate was rejected.
* :class:`appserver.menus.reloader.MenuReloader` LISTENs on ``callyard_config``, debounces,
  recompiles and publishes; an invalid edit leaves the last valid version live.
* :class:`appserver.menus.readers.MenuSetReader` fetches the current MenuSet and follows
  updates, on asyncio (the Asterisk worker) or gevent (the FreeSWITCH worker). A running call
  keeps the MenuSet object it started with.
"""
