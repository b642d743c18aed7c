"""Development only: embedded PostgreSQL and Redis, ``callyard dev``, the engine simulators,
the load generator, the demo data set, the ``/sim`` routes and the softphone. Production
commands (``api``, ``freeswitch``, ``asterisk``, ``cdr-writer``) never import this package."""
