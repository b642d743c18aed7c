"""The CDR as it travels through the Redis stream: flat string fields, validated on read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISPOSITIONS = ("answered", "abandoned", "overflow", "transferred", "hangup", "failed",
                "voicemail")
ENGINES = ("freeswitch", "asterisk")


@dataclass(frozen=True, slots=True)
class CdrRecord:
    call_id: str
    engine: str
    started_at: float  # Unix time, seconds
    ended_at: float
    node: str = ""
    caller: str = ""
    called: str = ""
    answered_at: float | None = None
    menu_path: tuple[str, ...] = ()
    queue: str | None = None
    wait_seconds: float | None = None
    agent: str | None = None
    disposition: str = "hangup"
    hangup_cause: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_fields(self) -> dict[str, str]:
        """Stream entry fields (every value a string; absent values are empty)."""
        return {
            "call_id": self.call_id,
            "engine": self.engine,
            "node": self.node,
            "caller": self.caller,
            "called": self.called,
            "started_at": repr(self.started_at),
            "answered_at": "" if self.answered_at is None else repr(self.answered_at),
            "ended_at": repr(self.ended_at),
            "menu_path": json.dumps(list(self.menu_path)),
            "queue": self.queue or "",
            "wait_seconds": "" if self.wait_seconds is None else repr(self.wait_seconds),
            "agent": self.agent or "",
            "disposition": self.disposition,
            "hangup_cause": self.hangup_cause,
            "extra": json.dumps(self.extra, default=str),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> CdrRecord:
        """Parse a stream entry; ValueError says what is wrong with it."""
        def req(name: str) -> str:
            value = fields.get(name)
            if not value:
                raise ValueError(f"missing {name}")
            return value

        def num(name: str) -> float | None:
            value = fields.get(name, "")
            if not value:
                return None
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{name} is not a number: {value!r}") from None

        engine = req("engine")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        disposition = req("disposition")
        if disposition not in DISPOSITIONS:
            raise ValueError(f"unknown disposition {disposition!r}")
        started, ended = num("started_at"), num("ended_at")
        if started is None or ended is None:
            raise ValueError("missing started_at or ended_at")
        wait = num("wait_seconds")
        if wait is not None and wait < 0:
            raise ValueError(f"negative wait_seconds {wait}")
        try:
            path = json.loads(fields.get("menu_path") or "[]")
            extra = json.loads(fields.get("extra") or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"bad JSON field: {exc}") from None
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise ValueError("menu_path must be a JSON list of strings")
        if not isinstance(extra, dict):
            raise ValueError("extra must be a JSON object")
        return cls(
            call_id=req("call_id"), engine=engine, started_at=started, ended_at=ended,
            node=fields.get("node", ""), caller=fields.get("caller", ""),
            called=fields.get("called", ""), answered_at=num("answered_at"),
            menu_path=tuple(path), queue=fields.get("queue") or None, wait_seconds=wait,
            agent=fields.get("agent") or None, disposition=disposition,
            hangup_cause=fields.get("hangup_cause", ""), extra=extra,
        )


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
