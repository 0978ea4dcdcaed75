"""JSON logging with a correlation id carried as a W3C ``traceparent``.

An HTTP request's ``traceparent`` (or a fresh one) is bound to a context variable; outbox rows
written during the request store it, the relay sends it as a Kafka header, and the consumer
binds it again, so one trace id follows a change across services and into every log line.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import sys

from pythonjsonlogger.json import JsonFormatter

_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

traceparent_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "traceparent", default=None
)


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Keep the parent's trace id (the correlation id) with a new span id."""
    m = _TRACEPARENT_RE.match(parent or "")
    return new_traceparent(m.group(1) if m else None)


def trace_id(traceparent: str | None) -> str | None:
    m = _TRACEPARENT_RE.match(traceparent or "")
    return m.group(1) if m else None


def current_traceparent() -> str | None:
    return traceparent_var.get()


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.trace_id = trace_id(traceparent_var.get())
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stderr with service name and trace id on every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(trace_id)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
