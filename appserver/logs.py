"""Logging setup shared by every command: readable lines in dev, JSON lines in production.

Pass call context with ``extra``: ``log.info("menu entered", extra={"call_id": cid, "menu": m})``
or use :func:`call_logger`. Every key in ``extra`` becomes a field of the JSON line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


class _ConnectionErrorsInOneLine(logging.Filter):
    """asyncpg's pool logs every failed reconnection with a traceback; while PostgreSQL
    restarts or fails over that is expected: the line says the error, without the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) or type(exc).__module__.startswith("asyncpg."):
            record.error = f"{type(exc).__name__}: {exc}"
            record.exc_info = record.exc_text = None
        return True


def setup(level: str = "INFO", fmt: str = "console") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "aiohttp.access", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _ConnectionErrorsInOneLine) for f in pool_log.filters):
        pool_log.addFilter(_ConnectionErrorsInOneLine())


def call_logger(logger: logging.Logger, call_id: str, **fields: Any) -> logging.LoggerAdapter:
    """A logger whose every line carries the call id (and any other fields)."""
    return logging.LoggerAdapter(logger, {"call_id": call_id, **fields})
