"""LOG_FORMAT=json: one JSON object per line, for log collectors, from stdlib logging.

Each line carries the connection id and user id the code was serving (see
signalr/connections/log_context.py) and, when an OpenTelemetry SDK traces, the trace and span ids, so
a log line leads to its trace. Credentials never reach it: the user id is the token's
subject, and access-log URLs have their access_token masked before they are logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from ..signalr.connections import log_context


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per log record, with the connection, user and trace it belongs to, for log
    collectors that index fields rather than parse text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        connection = log_context.connection_id.get()
        if connection is not None:
            entry["connection_id"] = connection
        user = log_context.user_id.get()
        if user is not None:
            entry["user_id"] = user
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_format: str) -> None:
    """The root logger: `text` (human-readable lines) or `json` (one object per line)."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLinesFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
