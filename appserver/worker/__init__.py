"""The worker spine, shared by ``callyard freeswitch`` and ``callyard asterisk``.

* :mod:`appserver.worker.pipeline` -- builds each call's flow: the app inside the worker's
  layers (CDR, browser-agent bridge, queueing), in one ordered list;
* :mod:`appserver.worker.services` -- opens what a worker runs beside its calls (Redis,
  menus, queue runtime, CDR sink, health server) from the settings;
* :mod:`appserver.worker.renewals` -- after a gap in its own renewals in Redis, a worker
  judges no other dead for a while (the queue runtime's leases, the call records' heartbeat).
"""
