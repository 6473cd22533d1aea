"""Structured logs: one JSON object per line, with the event's fields as keys.

The adapter logs through `log_event(logger, level, message, **fields)`; the CLI installs `JsonFormatter`.
A library user keeps their own logging setup: the fields then sit in `record.fields`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

__all__ = ["JsonFormatter", "RepeatFilter", "configure_json_logging", "log_event"]

_FIELDS = "fields"
_REPEAT_WINDOW_S = 30.0


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


class RepeatFilter(logging.Filter):
    """Lets a logger family's (default: kafka-python's) records through once per `window_s` per logger, level and
    message template; the next one let through says how many were held back (`"repeated": N`). With the broker
    down, kafka-python warns about ten times a second for as long as it lasts."""

    def __init__(
        self, family: str = "kafka", *, window_s: float = _REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._family = family
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [when last let through, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != self._family and not record.name.startswith(self._family + "."):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self._window_s:
                seen[1] += 1
                return False
            if len(self._seen) >= 1024:  # templates that embed varying text: forget the quiet ones
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window_s}
            self._seen[key] = [now, 0]
        held_back = int(seen[1]) if seen is not None else 0
        if held_back:
            fields = getattr(record, _FIELDS, None)
            setattr(record, _FIELDS, {**(fields if isinstance(fields, dict) else {}), "repeated": held_back})
        return True


def configure_json_logging(level: int | str = logging.INFO, *, stream: Any = None) -> None:
    """Send every log record (the adapter's, kafka-python's) as JSON lines to `stream` (default stderr).

    kafka-python is kept at WARNING unless `level` is DEBUG: its INFO lines are per-connection noise; and each of
    its messages is written at most once per 30 s (`RepeatFilter`): an unreachable broker would flood the log.
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
        handler.addFilter(RepeatFilter())
