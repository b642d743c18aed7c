"""Example call-flow apps (see the README, "Writing call-flow apps").

Each module has an ``app``; this package's ``app`` serves them all, so one worker can run
every example: ``CALLYARD_APPS=examples:app``. Numbers: 8100 order status, 8200 after-hours
callback, 83xx PIN menu, 8901-8903 misbehaving flows (containment).
"""

from __future__ import annotations

from examples import after_hours, misbehaving, order_status, pin_menu
from ivr.app import App

app = App("examples")
for _module in (order_status, after_hours, pin_menu, misbehaving):
    app.include(_module.app)
