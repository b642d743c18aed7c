"""Garbage-collector settings for a long-running call worker.

CPython's full collection walks every tracked object; in a worker holding thousands of calls
that is tens of milliseconds during which no call is served, several times a minute. After
start-up :func:`settle_gc` freezes what exists by then (modules, menus, clients: never
garbage) so full collections walk only the objects calls create, and spaces collections
further apart (young generations are cheap; cycles a call leaves behind wait a little
longer to be freed).
"""

from __future__ import annotations

import gc

THRESHOLDS = (2000, 20, 50)  # CPython's defaults: (700, 10, 10)


def settle_gc(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Call once start-up is done, before serving calls."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
