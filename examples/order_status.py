"""Order status by account number (dial 8100).

The caller keys in an account number (4 to 8 digits, then #); the flow looks the order up
and reads its number and status, then offers 1: talk to someone, 2: hear it again.
Three unknown numbers send the caller to the operator (1000).
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.app import (
    App,
    Call,
    Flow,
    answer,
    collect,
    dial,
    hangup,
    play,
    say_digits,
    set_var,
    transfer,
)


@dataclass(frozen=True)
class Order:
    number: str
    status: str  # "shipped" | "processing" | "delivered"


# The data source: a real deployment would query its order system here (keep it fast).
ORDERS: dict[str, Order] = {
    "1234": Order("5551", "shipped"),
    "98765": Order("7002", "processing"),
    "4242": Order("3090", "delivered"),
}


def lookup_order(account: str) -> Order | None:
    return ORDERS.get(account)


app = App("orders")


@app.route("8100")
def order_status(call: Call) -> Flow:
    yield answer()
    yield play("orders/welcome")
    order = None
    for _ in range(3):
        account = yield collect("orders/enter-account", min_digits=4, max_digits=8)
        order = lookup_order(account) if account else None
        if order is not None:
            yield set_var("order_account", account)
            break
        yield play("orders/not-found")
    if order is None:
        yield transfer("1000")  # ends the flow; the return is for type checkers
        return
    while True:
        yield play("orders/your-order", interruptible=True)
        yield say_digits(order.number)
        yield play(f"orders/status-{order.status}")
        choice = yield collect("orders/options", timeout=5)
        if choice == "1":
            result = yield dial("1001")
            if result.outcome != "answered":
                yield play("orders/agents-busy")
            yield hangup()
        if choice != "2":
            yield play("orders/goodbye")
            yield hangup()
