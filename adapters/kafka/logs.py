"""Structured logs: one JSON object per line, with the event's fields as keys.

The adapter logs through `log_event(logger, level, message, **fields)`; the CLI installs `JsonFormatter`.
A library user keeps their own logging setup: the fields then sit in `record.fields`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

__all__ = ["JsonFormatter", "configure_json_logging", "log_event"]

_FIELDS = "fields"


def log_event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured `fields` (kept apart from the text, never formatted into it)."""
    logger.log(level, message, extra={_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    """Formats a record as `{"ts", "level", "logger", "msg", ...fields, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_json_logging(level: int | str = logging.INFO, *, stream: Any = None) -> None:
    """Send every log record (the adapter's, kafka-python's) as JSON lines to `stream` (default stderr).

    kafka-python is kept at WARNING unless `level` is DEBUG: its INFO lines are per-connection noise.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    if not isinstance(numeric, int) or numeric > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.WARNING)
