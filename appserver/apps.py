"""Which call flow serves a call: the apps in ``CALLYARD_APPS``, then the IVR menus.

An app is a *flow factory*: ``factory(call: CallInfo) -> CallFlow | None``; None means
"not mine". An :class:`ivr.app.App` (generator flows routed by number) is one. The
workers ask each app of ``CALLYARD_APPS`` in order, then the menus
published from PostgreSQL (the IVR is one app among others, always last). A call no app
takes is told politely that the number is not in service by the driver.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ivr.app import App
from ivr.calls import CallFlow, CallInfo

if TYPE_CHECKING:
    from appserver.menus.readers import MenuSetReader

FlowFactory = Callable[[CallInfo], CallFlow | None]
log = logging.getLogger("callyard.apps")


class AppLoadError(ValueError):
    """An app named in the settings cannot be loaded (the message says why)."""


def load_app(spec: str) -> FlowFactory:
    """``module.path:attribute`` -> the flow factory it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f"expected module.path:attribute, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken app module must fail the start, clearly
        raise AppLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise AppLoadError(f"{spec!r} is not callable: expected factory(call_info) -> flow")
    if isinstance(factory, App) and not factory.routes:
        raise AppLoadError(f"{spec!r} is an App with no routes (use @app.route(number))")
    return factory


class MenuFlows:
    """The IVR app: flows for the numbers in the menus ``reader`` follows (the worker starts
    and stops the reader); ``flow_for`` itself is an in-memory lookup. Until a menu set is
    published the reader logs a warning every ``warn_interval`` seconds, :meth:`readiness`
    says so and the metric ``callyard_worker_menu_version`` is 0.
    """

    def __init__(self, reader: MenuSetReader) -> None:
        from appserver.metrics import WORKER_MENU_VERSION

        self.reader = reader
        WORKER_MENU_VERSION.set_function(lambda: self.reader.version or 0)

    def readiness(self) -> str:
        """The worker's /readyz entry: "ok", or a warning (not a failure: apps still serve)."""
        from appserver.menus.readers import NO_MENUS

        return "ok" if self.reader.current is not None else f"warning: {NO_MENUS}"

    def __call__(self, call: CallInfo) -> CallFlow | None:
        return self.reader.flow_for(call.called)


class AppRouter:
    """Asks each factory in turn; the first flow returned serves the call."""

    def __init__(self, factories: Sequence[FlowFactory]) -> None:
        self.factories = list(factories)

    def __call__(self, call: CallInfo) -> CallFlow | None:
        for factory in self.factories:
            flow = factory(call)
            if flow is not None:
                return flow
        return None

